"""A local folder as the origin. No request can reach outside the folder, nothing put in it
can hang a worker, and a file being written is never passed off as complete.

- The request path is resolved (symlinks too) and must lie under the root; the file is then
  opened one path component at a time with O_NOFOLLOW, so a symlink swapped in after that
  check fails the open instead of leading out of the root.
- The open is O_NONBLOCK, so a FIFO (or a device) swapped in cannot block a thread, and the
  opened descriptor must be a regular file (fstat); anything else is a 404.
- The body is read from that descriptor (pread, in a thread) under the read and total
  deadlines (proxy/origins/body_check.py). Its last bytes go out only when the file's size
  and mtime are still those of the open: a file written in place while we read it is never
  stored, and its clients see a cut response."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import mimetypes
import os
import stat
from collections.abc import AsyncGenerator, AsyncIterable
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import Deadlines
from proxy.errors import IncompleteBody, OriginTimeout, OriginUnavailable
from proxy.origins.base import OriginResponse, text_response
from proxy.origins.body_check import BodyLimits, checked_body
from proxy.redact import describe

CHUNK = 256 * 1024
# Files change rarely and carry validators; an hour is a safe default lifetime.
FILE_CACHE_CONTROL = "public, max-age=3600"
# What an open that finds no file inside the root fails with. ELOOP: a path component
# became a symlink after the path was resolved.
NOT_FOUND_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def resolve_inside(root: Path, path_qs: str) -> Path | None:
    """The file a request path names, or None when it is not a file inside `root`.

    The path is percent-decoded, then resolved (symlinks too) and must still lie under root:
    `..`, encoded `%2e%2e`, absolute paths and links pointing out all fail."""
    path = unquote(urlsplit(path_qs).path)
    if "\0" in path:
        return None
    try:
        candidate = (root / path.lstrip("/")).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return None
    return candidate


def open_inside(root: Path, path_qs: str) -> tuple[Path, int, os.stat_result] | None:
    """The regular file a request path names inside `root`, opened: its path, a descriptor
    and that descriptor's fstat. None when there is none (nothing there, outside the root,
    a symlink swapped in, not a regular file). Raises OSError for any other failure."""
    found = resolve_inside(root, path_qs)
    if found is None:
        return None
    try:
        fd = _open_beneath(root, found.relative_to(root).parts)
    except OSError as exc:
        if exc.errno in NOT_FOUND_ERRNOS:
            return None
        raise
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return found, fd, st


def _open_beneath(root: Path, parts: tuple[str, ...]) -> int:
    """Open root/parts[0]/.../parts[-1] without following a symlink at any step."""
    directory = os.open(root, _OPEN_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, _OPEN_DIRECTORY, dir_fd=directory)
            os.close(directory)
            directory = inner
        return os.open(parts[-1], _OPEN_FILE, dir_fd=directory)
    finally:
        os.close(directory)


def _read_at(fd: int, count: int, offset: int, last: bool) -> tuple[bytes, os.stat_result | None]:
    """One thread call: `count` bytes at `offset`, and for the last read the file's fstat."""
    chunk = os.pread(fd, count, offset)
    return chunk, os.fstat(fd) if last else None


class _OpenFile:
    """The descriptor of the file being served. close() may come while a read is still
    running in its thread (the fill was cancelled): the descriptor is then closed when that
    read returns, never under it."""

    def __init__(self, fd: int, st: os.stat_result) -> None:
        self.fd = fd
        self.opened = st
        self._reading: asyncio.Future[tuple[bytes, os.stat_result | None]] | None = None

    async def read(
        self, count: int, offset: int, last: bool
    ) -> tuple[bytes, os.stat_result | None]:
        loop = asyncio.get_running_loop()
        self._reading = loop.run_in_executor(None, _read_at, self.fd, count, offset, last)
        return await asyncio.shield(self._reading)

    def changed(self, now: os.stat_result) -> bool:
        return (now.st_size, now.st_mtime_ns) != (self.opened.st_size, self.opened.st_mtime_ns)

    def close(self) -> None:
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        reading = self._reading
        if reading is None or reading.done():
            os.close(fd)
            return

        def close_after(done: asyncio.Future[tuple[bytes, os.stat_result | None]]) -> None:
            if not done.cancelled():
                done.exception()  # retrieved: nobody waits for this read any more
            os.close(fd)

        reading.add_done_callback(close_after)


class FileOrigin:
    def __init__(self, root: Path, deadlines: Deadlines | None = None) -> None:
        self.root = root.resolve()
        self.name = f"file://{self.root}"
        self.deadlines = deadlines or Deadlines()

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
        deadline = loop.time() + self.deadlines.total
        try:
            found = await loop.run_in_executor(None, open_inside, self.root, path_qs)
        except OSError as exc:
            raise OriginUnavailable(
                "cannot open the file", stage="headers", origin=self.name, detail=describe(exc)
            ) from exc
        if found is None:
            return text_response(404, "not found\n")
        path, fd, st = found
        opened = _OpenFile(fd, st)
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
        limits = BodyLimits(self.deadlines.read, deadline, self._timeout)
        if method == "HEAD":
            opened.close()

        async def close() -> None:
            opened.close()

        return OriginResponse(
            status=200,
            headers=CIMultiDictProxy(out),
            body=checked_body(
                self._chunks(opened) if method == "GET" else _nothing(),
                limits,
                expected=st.st_size if method == "GET" else None,
                origin=self.name,
                broken=(OSError,),
            ),
            content_length=st.st_size,
            close=close,
            limits=limits,
        )

    async def _chunks(self, opened: _OpenFile) -> AsyncGenerator[bytes, None]:
        size = opened.opened.st_size
        offset = 0
        try:
            while True:
                count = min(CHUNK, size - offset)
                chunk, now = await opened.read(count, offset, last=offset + count >= size)
                if count and not chunk:
                    raise IncompleteBody(
                        f"file ended after {offset} of {size} bytes", origin=self.name
                    )
                offset += len(chunk)
                if offset >= size and (now is None or opened.changed(now)):
                    # Written to while we read it: what we have may mix two versions. The
                    # last bytes are held back, so no client can take it for complete.
                    raise IncompleteBody("file changed while it was read", origin=self.name)
                if chunk:
                    yield chunk
                if offset >= size:
                    return
        finally:
            opened.close()

    def _timeout(self, stage: str) -> OriginTimeout:
        seconds = self.deadlines.read if stage == "read" else self.deadlines.total
        return OriginTimeout(stage, seconds, origin=self.name)

    async def prepare(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def _nothing() -> AsyncGenerator[bytes, None]:
    return
    yield b""  # an async generator that yields nothing
