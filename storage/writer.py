"""A fill's write of one entry, as a context: whatever path the fill takes out of it (a
commit, a failure, a cancellation), no temp file outlives the `async with`.

    async with store.writer(key) as writer:
        writer.open()                 # the temp file; StorageFault when it cannot be made
        await writer.append(chunk)    # as the body streams
        await writer.commit(meta)     # or writer.discard(), or just leave
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from storage.entry import EntryMeta
from storage.layout import primary_key_hash
from storage.temp import TempBody

if TYPE_CHECKING:
    from storage.store import Store


class Writer:
    def __init__(self, store: Store, key: str) -> None:
        self._store = store
        self._primary = primary_key_hash(key)
        self._temp: TempBody | None = None

    async def __aenter__(self) -> Writer:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()

    def open(self) -> None:
        """Create the temp file the body is written to. Raises StorageFault."""
        assert self._temp is None
        self._temp = self._store.begin()

    @property
    def storing(self) -> bool:
        """A temp file is open: neither committed nor discarded yet."""
        return self._temp is not None

    async def append(self, chunk: bytes) -> None:
        """Write one chunk; raises StorageFault (ENOSPC, EIO, ...)."""
        await self._open_temp().append(chunk)

    @property
    def written(self) -> int:
        return 0 if self._temp is None else self._temp.written

    @property
    def sha256(self) -> str:
        return self._open_temp().sha256

    @property
    def path(self) -> Path:
        return self._open_temp().path

    def dup_fd(self) -> int:
        """A descriptor of the temp file that stays valid after commit or discard."""
        return self._open_temp().dup_fd()

    async def commit(self, meta: EntryMeta, started: float = 0.0) -> None:
        """Commit what was written as the entry `meta` describes (Store.commit). The temp
        file is gone afterwards, committed or not."""
        temp, self._temp = self._open_temp(), None
        try:
            await self._store.commit(temp, meta, self._primary, started)
        finally:
            temp.discard()  # nothing left to remove once committed

    def discard(self) -> None:
        """Stop writing and remove the temp file (readers keep their duplicated fds)."""
        temp, self._temp = self._temp, None
        if temp is not None:
            temp.discard()

    def _open_temp(self) -> TempBody:
        if self._temp is None:
            raise RuntimeError("no temp file is open")
        return self._temp
