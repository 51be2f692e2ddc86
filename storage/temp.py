"""A body being written to a temp file while it streams, readable while it grows."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path

from storage.commit import CommitRefused, commit_entry
from storage.entry import EntryMeta

COPY_CHUNK = 1 << 20


class TempBody:
    """Appends chunks to a temp file in the cache's tmp directory and hashes them.

    Other readers follow the growing file through `dup_fd()` and `written`. The file is
    removed by `discard()` unless `commit()` renamed it into place."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.written = 0
        self._hash = hashlib.sha256()
        self._closed = False

    @classmethod
    def create(cls, tmp_dir: Path) -> TempBody:
        path = tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}.tmp"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o644)
        return cls(path, fd)

    async def append(self, chunk: bytes) -> None:
        """Write one chunk in a thread; raises OSError (ENOSPC, EIO, ...) to the caller."""
        # Hashing in the same thread call keeps it off the event loop (hashlib releases
        # the GIL); appends are awaited one at a time, so the hash sees them in order.
        await asyncio.get_running_loop().run_in_executor(None, self._write_and_hash, chunk)
        self.written += len(chunk)

    def _write_and_hash(self, chunk: bytes) -> None:
        _write_all(self.fd, chunk)
        self._hash.update(chunk)

    async def copy_from(self, src_fd: int, length: int) -> None:
        """Append `length` bytes of another file (a stored body being refreshed), hashing
        them on the way, in one thread call."""
        await asyncio.get_running_loop().run_in_executor(None, self._copy, src_fd, length)

    def _copy(self, src_fd: int, length: int) -> None:
        offset = 0
        while offset < length:
            chunk = os.pread(src_fd, min(COPY_CHUNK, length - offset), offset)
            if not chunk:
                raise EOFError("source shorter than its stored length")
            _write_all(self.fd, chunk)
            self._hash.update(chunk)
            offset += len(chunk)
        self.written += length

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def dup_fd(self) -> int:
        """A descriptor of the file that stays valid after rename, unlink or close()."""
        return os.dup(self.fd)

    async def commit(self, meta: EntryMeta, final_path: Path) -> None:
        """Append the metadata trailer, then run the audited commit in one thread call."""
        if meta.body_length != self.written or meta.sha256 != self.sha256:
            raise CommitRefused("metadata does not describe the bytes written")
        trailer = meta.encode()
        expected = self.written + len(trailer)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _write_all, self.fd, trailer)
        await loop.run_in_executor(None, commit_entry, self.fd, self.path, final_path, expected)
        self._closed = True
        os.close(self.fd)

    def discard(self) -> None:
        """Remove the temp file (if not committed) and close it. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
