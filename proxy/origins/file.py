"""A local folder as the origin. No request can reach outside the folder."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
from collections.abc import AsyncIterable, AsyncIterator
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiofiles
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import IncompleteBody, OriginUnavailable
from proxy.origins.base import OriginResponse, text_response
from proxy.redact import describe

CHUNK = 256 * 1024
# Files change rarely and carry validators; an hour is a safe default lifetime.
FILE_CACHE_CONTROL = "public, max-age=3600"


def resolve_inside(root: Path, path_qs: str) -> Path | None:
    """The file a request path names, or None when it is not a file inside `root`.

    The path is percent-decoded, then resolved (symlinks too) and must still lie under root:
    `..`, encoded `%2e%2e`, absolute paths and links pointing out all fail."""
    path = unquote(urlsplit(path_qs).path)
    if "\0" in path:
        return None
    candidate = (root / path.lstrip("/")).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def _stat_file(root: Path, path_qs: str) -> tuple[Path, os.stat_result] | None:
    found = resolve_inside(root, path_qs)
    return None if found is None else (found, found.stat())


class FileOrigin:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.name = f"file://{self.root}"

    async def fetch(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes] | None = None,
    ) -> OriginResponse:
        if method not in ("GET", "HEAD"):
            return text_response(405, "a folder origin is read-only\n")
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(None, _stat_file, self.root, path_qs)
        except OSError as exc:
            raise OriginUnavailable(
                "cannot stat the file", stage="headers", origin=self.name, detail=describe(exc)
            ) from exc
        if found is None:
            return text_response(404, "not found\n")
        path, st = found
        etag = (
            '"' + hashlib.sha256(f"{st.st_mtime_ns}-{st.st_size}".encode()).hexdigest()[:20] + '"'
        )
        out: CIMultiDict[str] = CIMultiDict()
        out["Content-Type"] = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        out["Content-Length"] = str(st.st_size)
        out["Last-Modified"] = formatdate(st.st_mtime, usegmt=True)
        out["ETag"] = etag
        out["Cache-Control"] = FILE_CACHE_CONTROL
        out["Date"] = formatdate(usegmt=True)
        return OriginResponse(
            status=200,
            headers=CIMultiDictProxy(out),
            body=self._read(path, st.st_size),
            content_length=st.st_size,
        )

    async def _read(self, path: Path, size: int) -> AsyncIterator[bytes]:
        sent = 0
        try:
            async with aiofiles.open(path, "rb") as f:
                while sent < size:
                    chunk = await f.read(min(CHUNK, size - sent))
                    if not chunk:
                        break
                    sent += len(chunk)
                    yield chunk
        except OSError as exc:
            raise IncompleteBody(
                f"read failed after {sent} bytes: {exc}", origin=self.name
            ) from exc
        if sent != size:
            # The file shrank while we read it: never pass that off as complete.
            raise IncompleteBody(f"file ended after {sent} of {size} bytes", origin=self.name)

    async def close(self) -> None:
        return None
