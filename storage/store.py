"""The cache store as the proxy sees it: look up, write, commit, remove, stay in bounds."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from storage.clock import SYSTEM_CLOCK, Clock
from storage.entry import CorruptEntry, EntryMeta
from storage.index import Index
from storage.index_batch import IndexBatch
from storage.keylock import KeyLock
from storage.layout import Layout, variant_key_hash
from storage.lookup import OpenEntry, open_entry
from storage.publish import commit_with_head
from storage.remove import remove_entry
from storage.temp import TempBody
from storage.walk import iter_entry_files, iter_unnamed_bodies

log = structlog.get_logger("pixcache.storage")

# How long a statvfs reading of free space is trusted.
FREE_SPACE_TTL = 1.0
# How often upkeep looks for bodies no head names (they are removed once an hour old).
UNNAMED_BODY_SWEEP = 600.0
# Bodies up to this size are read whole and checked against their checksum on every hit.
CHECK_ON_HIT_MAX = 1 << 20
# key hash, size, last use, expiry, request path, tags: one entry's index row
IndexRow = tuple[str, int, float, float, str, tuple[str, ...]]
# request path, tags, since: does a purge since then cover this entry?
PurgeCheck = tuple[str, tuple[str, ...], float]


class PurgedMeanwhile(Exception):
    """A purge came after the fill started: what it fetched must not be committed."""


@dataclass(frozen=True)
class Bounds:
    max_size: int | None = None  # bytes the entries may take in all
    min_free: int = 0  # bytes that must stay free on the cache's filesystem
    stale_grace: float = 86400.0  # seconds past expiry before an entry is removed


@dataclass(frozen=True)
class VaryPlan:
    """Where a fill stores its response: the primary key, and the Vary marker seen there."""

    primary: str
    marker_fields: tuple[str, ...] = ()
    marker_id: str = ""


def _never_expires(meta: EntryMeta) -> float:
    return float("inf")


class Store:
    def __init__(
        self,
        root: Path,
        bounds: Bounds = Bounds(),
        *,
        expiry_of: Callable[[EntryMeta], float] = _never_expires,
        tags_of: Callable[[EntryMeta], tuple[str, ...]] = lambda meta: (),
        on_corrupt: Callable[[str, str], None] = lambda key_hash, reason: None,
        on_evict: Callable[[int, str], None] = lambda count, why: None,
        check_on_hit_max: int = CHECK_ON_HIT_MAX,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.layout = Layout(root)
        self.clock = clock  # the instance's one clock (storage/clock.py)
        self._now, self._monotonic = clock.now, clock.monotonic  # bound once: hits call _now
        self._entries_dir = os.fspath(self.layout.entries)
        self.check_on_hit_max = check_on_hit_max  # 0: a hit checks sizes only
        self.bounds = bounds
        self.expiry_of = expiry_of
        self.tags_of = tags_of
        self.on_corrupt = on_corrupt
        self.on_evict = on_evict
        self.index = Index(self.layout.index_file)
        # SQLite connections belong to a thread: every index call runs on this one.
        self._index_thread = ThreadPoolExecutor(1, thread_name_prefix="pixcache-index")
        self._adds: IndexBatch[IndexRow, None] = IndexBatch(self._index_thread, self._add_rows)
        self._purge_checks: IndexBatch[PurgeCheck, bool] = IndexBatch(
            self._index_thread, self._check_purges
        )
        self._uses: dict[str, float] = {}
        self._free: tuple[float, int] = (0.0, 0)
        self.swept = 0
        # None: never swept, so the first upkeep round sweeps. (0.0 would mean "swept at
        # monotonic zero", which is boot time: no sweep for 10 minutes after a reboot.)
        self._bodies_swept_at: float | None = None
        self.evicted = 0
        self.corrupt_found = 0
        # An index write failed: the next upkeep reconciles the index with the files.
        self.index_stale = False

    # -- start -------------------------------------------------------------------------
    def prepare(self) -> int:
        """Create the layout, check it is writable, sweep crash leftovers. Raises OSError.
        Runs once per instance, before any worker serves."""
        self.layout.create()
        self.layout.check_writable()
        self.swept = self.layout.sweep_temp_files()
        return self.swept

    # -- reading -----------------------------------------------------------------------
    async def open(self, key_hash: str) -> OpenEntry | None:
        """The entry stored under `key_hash`, opened (a body up to `check_on_hit_max` bytes
        read and checked), or None. A corrupt entry is removed and reported as absent: it is
        never served."""
        path = self.layout.entry_path(key_hash)
        try:
            # A miss is told inline: a stat of page-cached metadata costs far less than the
            # thread hand-off that opening and checking an entry needs.
            os.stat(path)
        except FileNotFoundError:
            return None
        except OSError:
            pass  # let the full open say what is wrong
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, open_entry, path, self.check_on_hit_max)
        except CorruptEntry as exc:
            log.warning("corrupt_entry", found_by="hit", key_hash=key_hash, error=str(exc))
            self.corrupt_found += 1
            self.on_corrupt(key_hash, str(exc))
            if exc.file_id is not None:
                await loop.run_in_executor(None, remove_entry, path, exc.file_id)
                await self.forget(key_hash)
            return None
        except OSError as exc:
            # Our fault (descriptors, memory, permissions) or the disk's: a miss either way,
            # but the entry itself may be fine, so it stays; `verify` judges it.
            log.error("entry_unreadable", key_hash=key_hash, error=str(exc))
            return None

    def head_path(self, key_hash: str) -> str:
        """Layout.entry_path as a plain string: this runs on every lookup, and pathlib
        costs several microseconds per step."""
        return f"{self._entries_dir}/{key_hash[:2]}/{key_hash}"

    def note_use(self, key_hash: str) -> None:
        """Record a hit for LRU; written to the index in batches by `flush_uses`."""
        self._uses[key_hash] = self._now()

    async def identity(self, key_hash: str) -> tuple[int, int] | None:
        """(inode, mtime) of the entry file, to tell whether it was replaced; None if absent."""
        path = self.layout.entry_path(key_hash)
        try:
            st = await asyncio.get_running_loop().run_in_executor(None, os.stat, path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def key_lock(self, key_hash: str) -> KeyLock:
        return KeyLock(self.layout.lock_file, key_hash)

    # -- writing -----------------------------------------------------------------------
    def admits_new_entries(self) -> bool:
        """False while free space is under the minimum (no new entries are admitted)."""
        if not self.bounds.min_free:
            return True
        return self._free_bytes() >= self.bounds.min_free

    def begin(self) -> TempBody:
        return TempBody.create(self.layout.tmp)

    async def commit(
        self, temp: TempBody, meta: EntryMeta, plan: VaryPlan, started: float = 0.0
    ) -> None:
        """Make room, commit the entry (and a Vary marker when the fields are new), index it.
        Raises on failure (PurgedMeanwhile when a purge since `started` covers it); the
        caller discards the temp file."""
        if started and await self.purged_since(meta, started):
            raise PurgedMeanwhile(meta.key)
        meta = replace(meta, body_id=temp.body_id, crc32=temp.crc32)
        target = plan.primary
        vary_id = plan.marker_id
        if meta.vary_fields:
            if meta.vary_fields != plan.marker_fields:
                vary_id = uuid.uuid4().hex
            target = variant_key_hash(plan.primary, vary_id, meta.vary_values)
        await self._make_room(meta.file_size())
        await temp.commit(meta, self.layout.entry_path(target))
        await self._indexed(target, meta)
        if meta.vary_fields and vary_id != plan.marker_id:
            marker = self.begin()
            marker_meta = EntryMeta(
                key=meta.key,
                status=0,
                headers=[],
                request_time=meta.request_time,
                response_time=meta.response_time,
                body_length=0,
                sha256=marker.sha256,
                vary_fields=meta.vary_fields,
                is_vary_marker=True,
                vary_id=vary_id,
                body_id=marker.body_id,
                crc32=marker.crc32,
            )
            try:
                await marker.commit(marker_meta, self.layout.entry_path(plan.primary))
            finally:
                marker.discard()
            await self._indexed(plan.primary, marker_meta)

    async def refresh(self, key_hash: str, meta: EntryMeta, started: float = 0.0) -> None:
        """Store `meta` (freshened headers, RFC 9111 §4.3.4) for the entry's body, which stays
        where it is: a new head naming it is committed in place of the old one."""
        if started and await self.purged_since(meta, started):
            raise PurgedMeanwhile(meta.key)
        await asyncio.get_running_loop().run_in_executor(
            None, commit_with_head, self.layout.tmp, meta, self.layout.entry_path(key_hash), None
        )
        await self._indexed(key_hash, meta)

    async def purge(self, key_hashes: list[str]) -> int:
        """Remove these entries (files and index rows); returns how many were on disk."""
        removed = await self._unlink(key_hashes)
        await self._unindex(key_hashes)
        return removed

    async def keys_under(self, prefix: str) -> list[str]:
        return await self._on_index(self.index.keys_under, prefix)

    async def record_purge(self, kind: str, value: str) -> None:
        await self._on_index(self.index.record_purge, kind, value, self._now())

    async def purged_since(self, meta: EntryMeta, since: float) -> bool:
        """A purge that came after a fill started covers what it fetched: it must not be
        committed (whichever worker process took the purge)."""
        return await self._purge_checks.call((meta.key, self.tags_of(meta), since))

    def _check_purges(self, checks: list[PurgeCheck]) -> list[bool]:
        return [self.index.purged_since(*check) for check in checks]

    def _add_rows(self, rows: list[IndexRow]) -> list[None]:
        self.index.add_many(rows)
        return [None] * len(rows)

    async def entry_count(self) -> int:
        return await self._on_index(self.index.count)

    async def total_size(self) -> int:
        return await self._on_index(self.index.total_size)

    async def keys_at(self, path: str) -> list[str]:
        return await self._on_index(self.index.keys_at, path)

    async def keys_tagged(self, tag: str) -> list[str]:
        return await self._on_index(self.index.keys_tagged, tag)

    async def remove(self, key_hash: str) -> bool:
        """Remove one entry; True if it was on disk."""
        removed = await self._unlink([key_hash])
        await self.forget(key_hash)
        return removed > 0

    async def forget(self, key_hash: str) -> None:
        """Drop the index row of an entry that is gone (removed as corrupt, say)."""
        await self._unindex([key_hash])

    async def _unindex(self, key_hashes: list[str]) -> None:
        await self._adds.settled()  # an add waiting in its batch must not bring a row back
        await self._on_index(self.index.remove, key_hashes)

    # -- bounds ------------------------------------------------------------------------
    async def _make_room(self, incoming: int) -> None:
        if self.bounds.max_size is None:
            return
        await self.flush_uses()  # the LRU order must include this worker's latest hits
        victims = await self._on_index(
            self.index.take_least_recently_used, self.bounds.max_size, incoming
        )
        await self._evict(victims, "max-size")

    async def maintain(self) -> None:
        """Remove entries stale past their grace, and evict while free space is short;
        forget purges older than any fill could be (a day)."""
        await self._on_index(self.index.forget_purges_before, self._now() - 86400)
        swept_at = self._bodies_swept_at
        if swept_at is None or self._monotonic() - swept_at > UNNAMED_BODY_SWEEP:
            await self.sweep_unnamed_bodies()
        if self.index_stale:
            self.index_stale = False
            await self.reconcile()
        await self.flush_uses()
        expired = await self._on_index(
            self.index.take_expired, self._now() - self.bounds.stale_grace
        )
        await self._evict(expired, "expired")
        while self.bounds.min_free:
            shortfall = self.bounds.min_free - self._free_bytes(fresh=True)
            if shortfall <= 0:
                break
            victims = await self._on_index(self.index.take_bytes, shortfall)
            if not victims:
                break
            await self._evict(victims, "min-free")
        if self.bounds.max_size is not None:
            await self._make_room(0)

    async def flush_uses(self) -> None:
        if self._uses:
            uses, self._uses = self._uses, {}
            try:
                await self._on_index(self.index.touch, list(uses.items()))
            except sqlite3.Error:
                # Keep them for the next round (newer uses of the same key win).
                self._uses = uses | self._uses
                raise

    async def reconcile(self) -> int:
        """Bring the index in line with the entry files (at start, in the background):
        files it does not know are added, rows without a file are dropped."""
        await self.sweep_unnamed_bodies()
        return await self._on_index(self._reconcile)

    async def sweep_unnamed_bodies(self) -> int:
        """Remove bodies no head names (a crash or a failed removal between a head and its
        body), once they are too old to belong to a commit in flight. Returns how many."""
        self._bodies_swept_at = self._monotonic()
        loop = asyncio.get_running_loop()
        removed = await loop.run_in_executor(None, _remove_unnamed_bodies, self.layout)
        if removed:
            log.info("unnamed_bodies_removed", count=removed)
        return removed

    def _reconcile(self) -> int:
        known = self.index.keys()
        seen: set[str] = set()
        added = 0
        for path in iter_entry_files(self.layout):
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

    async def _indexed(self, key_hash: str, meta: EntryMeta) -> None:
        """Index a committed entry. The entry is on disk whatever happens here: a failed
        index write (its disk is full too) is logged and healed by the next reconcile."""
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
            self.index_stale = True
            log.warning("index_write_failed", key_hash=key_hash, error=str(exc))

    async def _evict(self, key_hashes: list[str], why: str) -> None:
        if key_hashes:
            await self._unlink(key_hashes)
            self.evicted += len(key_hashes)
            self.on_evict(len(key_hashes), why)
            log.info("evicted", count=len(key_hashes), why=why)

    async def _unlink(self, key_hashes: list[str]) -> int:
        paths = [self.layout.entry_path(k) for k in key_hashes]
        return await asyncio.get_running_loop().run_in_executor(None, _unlink_all, paths)

    def _free_bytes(self, *, fresh: bool = False) -> int:
        checked, free = self._free
        now = self._monotonic()
        if fresh or now - checked > FREE_SPACE_TTL:
            st = os.statvfs(self.layout.root)
            free = st.f_bavail * st.f_frsize
            self._free = (now, free)
        return free

    async def _on_index(self, fn, *args):  # noqa: ANN001, ANN002, ANN202
        return await asyncio.get_running_loop().run_in_executor(self._index_thread, fn, *args)

    def close(self) -> None:
        self._index_thread.shutdown(wait=True)


def _remove_unnamed_bodies(layout: Layout) -> int:
    return sum(1 for orphan in iter_unnamed_bodies(layout) if not orphan.keep and orphan.remove())


def _unlink_all(paths: list[Path]) -> int:
    """Remove these entries; returns how many there were."""
    return sum(remove_entry(path) for path in paths)
