"""A body being written to a temp file while it streams, readable while it grows."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
import zlib
from pathlib import Path

from storage.commit import CommitRefused, StagedFile
from storage.entry import EntryMeta, new_body_id
from storage.errors import StorageFault
from storage.layout import Layout
from storage.publish import commit_with_head, write_all


class TempBody:
    """Appends chunks to a temp file in the cache's tmp directory and hashes them.

    Other readers follow the growing file through `dup_fd()` and `written`. The file is
    removed by `discard()` unless `commit()` renamed it into place."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.body_id = new_body_id()  # the name its body file gets when committed
        self.written = 0
        self._hash = hashlib.sha256()
        self._crc32 = 0  # zlib.crc32 of what was written so far
        self._closed = False

    @classmethod
    def create(cls, tmp_dir: Path) -> TempBody:
        """A new temp file in `tmp_dir`; raises StorageFault when it cannot be made."""
        path = tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}.tmp"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageFault(exc) from exc
        return cls(path, fd)

    async def append(self, chunk: bytes) -> None:
        """Write one chunk in a thread; raises StorageFault (ENOSPC, EIO, ...) to the caller."""
        # Hashing in the same thread call keeps it off the event loop (hashlib releases
        # the GIL); appends are awaited one at a time, so the hash sees them in order.
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._write_and_hash, chunk)
        except OSError as exc:
            raise StorageFault(exc) from exc
        self.written += len(chunk)

    def _write_and_hash(self, chunk: bytes) -> None:
        write_all(self.fd, chunk)
        self._hash.update(chunk)
        self._crc32 = zlib.crc32(chunk, self._crc32)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def crc32(self) -> int:
        return self._crc32

    def dup_fd(self) -> int:
        """A descriptor of the file that stays valid after rename, unlink or close()."""
        return os.dup(self.fd)

    async def commit(self, meta: EntryMeta, head_path: Path) -> None:
        """Commit this body and a head for it (`meta`) at `head_path`, in one thread call."""
        if (meta.body_length, meta.sha256, meta.body_id) != (
            self.written,
            self.sha256,
            self.body_id,
        ):
            raise CommitRefused("metadata does not describe the bytes written")
        if meta.crc32 is not None and meta.crc32 != self.crc32:
            raise CommitRefused("metadata does not describe the bytes written (crc32)")
        body_path = Layout.of_entry(head_path).body_path(head_path.name, self.body_id)
        body = StagedFile(self.fd, self.path, body_path, self.written)
        await asyncio.get_running_loop().run_in_executor(
            None, commit_with_head, self.path.parent, meta, head_path, body
        )
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
