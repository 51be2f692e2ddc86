"""The cache store as the proxy sees it: look up, begin a write, remove."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import structlog

from storage.entry import CorruptEntry
from storage.layout import Layout
from storage.lookup import OpenEntry, open_entry
from storage.temp import TempBody

log = structlog.get_logger("pixcache.storage")


class Store:
    def __init__(self, root: Path) -> None:
        self.layout = Layout(root)
        self.corrupt_found = 0
        self.swept = 0

    def prepare(self) -> int:
        """Create the layout, check it is writable, sweep crash leftovers. Raises OSError."""
        self.layout.create()
        self.layout.check_writable()
        self.swept = self.layout.sweep_temp_files()
        return self.swept

    async def open(self, key_hash: str) -> OpenEntry | None:
        """The entry stored under `key_hash`, opened, or None. A corrupt entry is removed
        and reported as absent: it is never served."""
        path = self.layout.entry_path(key_hash)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, open_entry, path)
        except (CorruptEntry, OSError) as exc:
            self.corrupt_found += 1
            log.warning("corrupt_entry", key_hash=key_hash, error=str(exc))
            await self.remove(key_hash)
            return None

    def begin(self) -> TempBody:
        return TempBody.create(self.layout.tmp)

    def final_path(self, key_hash: str) -> Path:
        return self.layout.entry_path(key_hash)

    async def remove(self, key_hash: str) -> None:
        path = self.layout.entry_path(key_hash)
        await asyncio.get_running_loop().run_in_executor(None, _unlink, path)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
