"""The index as the event loop uses it.

SQLite connections belong to a thread, so every index call runs on one thread of its own.
Adds and purge checks made while it is busy go to it in batches (storage/index_batch.py);
hits are noted in memory and written in batches by `flush_uses`. An index write that fails
(its disk is full too) never fails a commit: the entry is on disk, and the next upkeep
reconciles the index with the files."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from storage.entry import CorruptEntry, EntryMeta
from storage.index import Index
from storage.index_batch import IndexBatch
from storage.layout import Layout
from storage.lookup import open_entry
from storage.walk import iter_entry_files

log = structlog.get_logger("pixcache.storage")

# key hash, size, last use, expiry, request path, tags: one entry's index row
IndexRow = tuple[str, int, float, float, str, tuple[str, ...]]
# request path, tags, since: does a purge since then cover this entry?
PurgeCheck = tuple[str, tuple[str, ...], float]
T = TypeVar("T")


class AsyncIndex:
    def __init__(
        self,
        index: Index,
        *,
        expiry_of: Callable[[EntryMeta], float],
        tags_of: Callable[[EntryMeta], tuple[str, ...]],
        now: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        self._now = now  # the store's clock
        self.expiry_of = expiry_of
        self.tags_of = tags_of
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="pixcache-index")
        self._adds: IndexBatch[IndexRow, None] = IndexBatch(self._thread, self._add_rows)
        self._purge_checks: IndexBatch[PurgeCheck, bool] = IndexBatch(
            self._thread, self._check_purges
        )
        self._uses: dict[str, float] = {}
        # An index write failed: the next upkeep reconciles the index with the files.
        self.stale = False
        self._closed = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the index thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def add(self, key_hash: str, meta: EntryMeta) -> None:
        """Index a committed entry; a failed write is logged and healed by `reconcile`."""
        row = (
            key_hash,
            meta.file_size(),
            self._now(),
            self.expiry_of(meta),
            meta.key,
            self.tags_of(meta),
        )
        try:
            await self._adds.call(row)
        except sqlite3.Error as exc:
            self.stale = True
            log.warning("index_write_failed", key_hash=key_hash, error=str(exc))

    async def settled(self) -> None:
        """Return once the adds already made are in the index."""
        await self._adds.settled()

    async def remove(self, key_hashes: list[str]) -> None:
        await self._adds.settled()  # an add waiting in its batch must not bring a row back
        await self.call(self.index.remove, key_hashes)

    async def purged_since(self, meta: EntryMeta, since: float) -> bool:
        return await self._purge_checks.call((meta.key, self.tags_of(meta), since))

    def note_use(self, key_hash: str) -> None:
        self._uses[key_hash] = self._now()

    async def flush_uses(self) -> None:
        if self._uses:
            uses, self._uses = self._uses, {}
            try:
                await self.call(self.index.touch, list(uses.items()))
            except sqlite3.Error:
                # Keep them for the next round (newer uses of the same key win).
                self._uses = uses | self._uses
                raise

    async def reconcile(self, layout: Layout) -> int:
        """Files the index does not know are added, rows without a file are dropped."""
        return await self.call(self._reconcile, layout)

    def _reconcile(self, layout: Layout) -> int:
        known = self.index.keys()
        seen: set[str] = set()
        added = 0
        for path in iter_entry_files(layout):
            key_hash = path.name
            seen.add(key_hash)
            if key_hash in known:
                continue
            try:
                entry = open_entry(path)
                if entry is None:
                    continue
                os.close(entry.fd)
                used = path.stat().st_mtime
            except (CorruptEntry, OSError):
                continue  # gone meanwhile, or corrupt: verify and the hit path deal with it
            self.index.add(
                key_hash,
                entry.size,
                used,
                self.expiry_of(entry.meta),
                entry.meta.key,
                self.tags_of(entry.meta),
            )
            added += 1
        self.index.remove(known - seen)
        return added

    def _check_purges(self, checks: list[PurgeCheck]) -> list[bool]:
        return [self.index.purged_since(*check) for check in checks]

    def _add_rows(self, rows: list[IndexRow]) -> list[None]:
        self.index.add_many(rows)
        return [None] * len(rows)

    def close(self) -> None:
        """Wait for the calls made so far, then close the database and the thread: the
        descriptors go now, not whenever the garbage collector gets to them."""
        if not self._closed:
            self._closed = True
            self._thread.submit(self.index.close)
            self._thread.shutdown(wait=True)
