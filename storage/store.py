"""The cache store as the proxy sees it: look up, write, commit, remove, stay in bounds."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import structlog

from storage.async_index import AsyncIndex
from storage.clock import SYSTEM_CLOCK, Clock
from storage.entry import CorruptEntry, EntryMeta
from storage.index import Index
from storage.keylock import KeyLock
from storage.layout import Layout, variant_key_hash
from storage.lookup import OpenEntry, open_entry
from storage.publish import commit_with_head
from storage.remove import remove_entry
from storage.temp import TempBody
from storage.vary import Found, Selector, follow, marker_at, marker_for
from storage.walk import iter_unnamed_bodies
from storage.writer import Writer

log = structlog.get_logger("pixcache.storage")

# How long a statvfs reading of free space is trusted.
FREE_SPACE_TTL = 1.0
# How often upkeep looks for bodies no head names (they are removed once an hour old).
UNNAMED_BODY_SWEEP = 600.0
# Bodies up to this size are read whole and checked against their checksum on every hit.
CHECK_ON_HIT_MAX = 1 << 20
# A fault met while opening an entry in a thread, reported once back on the event loop.
Fault = tuple[str, CorruptEntry | OSError]
T = TypeVar("T")


class PurgedMeanwhile(Exception):
    """A purge came after the fill started: what it fetched must not be committed."""


@dataclass(frozen=True)
class Bounds:
    max_size: int | None = None  # bytes the entries may take in all
    min_free: int = 0  # bytes that must stay free on the cache's filesystem
    stale_grace: float = 86400.0  # seconds past expiry before an entry is removed


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
        self.on_corrupt = on_corrupt
        self.on_evict = on_evict
        self.index = Index(self.layout.index_file)
        self._index = AsyncIndex(self.index, expiry_of=expiry_of, tags_of=tags_of, now=self._now)
        self._free: tuple[float, int] = (0.0, 0)
        self.swept = 0
        # None: never swept, so the first upkeep round sweeps. (0.0 would mean "swept at
        # monotonic zero", which is boot time: no sweep for 10 minutes after a reboot.)
        self._bodies_swept_at: float | None = None
        self.evicted = 0
        self.corrupt_found = 0

    # -- start -------------------------------------------------------------------------
    def prepare(self) -> int:
        """Create the layout, check it is writable, sweep crash leftovers. Raises OSError.
        Runs once per instance, before any worker serves."""
        self.layout.create()
        self.layout.check_writable()
        self.swept = self.layout.sweep_temp_files()
        return self.swept

    # -- reading -----------------------------------------------------------------------
    async def lookup(self, primary: str, select: Selector) -> Found:
        """The entry that answers a request for the URL whose key is `primary`: the one
        stored there, or, under a Vary marker, the variant `select` chooses (RFC 9111 §4.1).
        One thread call opens both. A corrupt entry is removed and reported as absent."""
        if not self._may_exist(primary):
            # A miss is told inline: a stat of page-cached metadata costs far less than the
            # thread hand-off that opening and checking an entry needs.
            return Found(None, primary, "uri-miss")
        faults: list[Fault] = []
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, self._find, primary, select, faults)
        await self._report(faults)
        return found

    async def open(self, key_hash: str) -> OpenEntry | None:
        """The entry stored under `key_hash` (a Vary marker is an entry too), opened (a body
        up to `check_on_hit_max` bytes read and checked), or None. A corrupt entry is
        removed and reported as absent: it is never served."""
        if not self._may_exist(key_hash):
            return None
        faults: list[Fault] = []
        loop = asyncio.get_running_loop()
        entry = await loop.run_in_executor(None, self._open_at, key_hash, faults)
        await self._report(faults)
        return entry

    def _may_exist(self, key_hash: str) -> bool:
        try:
            os.stat(self.head_path(key_hash))
        except FileNotFoundError:
            return False
        except OSError:
            pass  # let the full open say what is wrong
        return True

    def _find(self, primary: str, select: Selector, faults: list[Fault]) -> Found:
        entry = self._open_at(primary, faults)
        if entry is None:
            return Found(None, primary, "uri-miss")
        if not entry.meta.is_vary_marker:
            return Found(entry, primary)
        variant, key_hash = follow(entry, primary, select, lambda at: self._open_at(at, faults))
        return Found(variant, key_hash, "" if variant is not None else "vary-miss")

    def _open_at(self, key_hash: str, faults: list[Fault]) -> OpenEntry | None:
        """open_entry, in a thread: a corrupt head is removed here (only that very file),
        and what went wrong is left in `faults` for `_report`."""
        path = self.layout.entry_path(key_hash)
        try:
            return open_entry(path, self.check_on_hit_max)
        except CorruptEntry as exc:
            faults.append((key_hash, exc))
            if exc.file_id is not None:
                remove_entry(path, exc.file_id)
        except OSError as exc:
            faults.append((key_hash, exc))
        return None

    async def _report(self, faults: list[Fault]) -> None:
        for key_hash, exc in faults:
            if isinstance(exc, CorruptEntry):
                log.warning("corrupt_entry", found_by="hit", key_hash=key_hash, error=str(exc))
                self.corrupt_found += 1
                self.on_corrupt(key_hash, str(exc))
                if exc.file_id is not None:
                    await self.forget(key_hash)
            else:
                # Our fault (descriptors, memory, permissions) or the disk's: a miss either
                # way, but the entry itself may be fine, so it stays; `verify` judges it.
                log.error("entry_unreadable", key_hash=key_hash, error=str(exc))

    def head_path(self, key_hash: str) -> str:
        """Layout.entry_path as a plain string: this runs on every lookup, and pathlib
        costs several microseconds per step."""
        return f"{self._entries_dir}/{key_hash[:2]}/{key_hash}"

    def note_use(self, key_hash: str) -> None:
        """Record a hit for LRU; written to the index in batches by `flush_uses`."""
        self._index.note_use(key_hash)

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

    def upkeep_lock(self) -> KeyLock:
        """The lock that makes one worker process at a time do upkeep."""
        return KeyLock(self.layout.upkeep_lock_file, "0" * 64)

    # -- writing -----------------------------------------------------------------------
    def admits_new_entries(self) -> bool:
        """False while free space is under the minimum (no new entries are admitted)."""
        if not self.bounds.min_free:
            return True
        return self._free_bytes() >= self.bounds.min_free

    def writer(self, key: str) -> Writer:
        """A context for writing the response to `key` (the request's path and query): its
        temp file is removed on leaving unless it was committed."""
        return Writer(self, key)

    def begin(self) -> TempBody:
        return TempBody.create(self.layout.tmp)

    async def commit(
        self, temp: TempBody, meta: EntryMeta, primary: str, started: float = 0.0
    ) -> None:
        """Make room, commit the entry under its URL's key `primary` (under a Vary marker's
        variant key when it varies, writing the marker when the fields are new), index it.
        Raises on failure (PurgedMeanwhile when a purge since `started` covers it); the
        caller discards the temp file."""
        if started and await self.purged_since(meta, started):
            raise PurgedMeanwhile(meta.key)
        meta = replace(meta, body_id=temp.body_id, crc32=temp.crc32)
        target, new_marker = primary, ""
        if meta.vary_fields:
            # The marker as it is now, whatever the lookup saw: another fill (of any worker)
            # may have written one since, and its variants stay selectable.
            loop = asyncio.get_running_loop()
            marker = await loop.run_in_executor(None, marker_at, self.layout.entry_path(primary))
            if marker is not None and marker.fields == meta.vary_fields:
                vary_id = marker.vary_id
            else:
                vary_id = new_marker = uuid.uuid4().hex
            target = variant_key_hash(primary, vary_id, meta.vary_values)
        await self._make_room(meta.file_size())
        await temp.commit(meta, self.layout.entry_path(target))
        await self._index.add(target, meta)
        if new_marker:
            empty = self.begin()
            marker_meta = marker_for(meta, new_marker, empty)
            try:
                await empty.commit(marker_meta, self.layout.entry_path(primary))
            finally:
                empty.discard()
            await self._index.add(primary, marker_meta)

    async def refresh(self, key_hash: str, meta: EntryMeta, started: float = 0.0) -> None:
        """Store `meta` (freshened headers, RFC 9111 §4.3.4) for the entry's body, which stays
        where it is: a new head naming it is committed in place of the old one."""
        if started and await self.purged_since(meta, started):
            raise PurgedMeanwhile(meta.key)
        await asyncio.get_running_loop().run_in_executor(
            None, commit_with_head, self.layout.tmp, meta, self.layout.entry_path(key_hash), None
        )
        await self._index.add(key_hash, meta)

    async def purge(self, key_hashes: list[str]) -> int:
        """Remove these entries (files and index rows); returns how many were on disk."""
        removed = await self._unlink(key_hashes)
        await self._index.remove(key_hashes)
        return removed

    async def purged_since(self, meta: EntryMeta, since: float) -> bool:
        """A purge that came after a fill started covers what it fetched: it must not be
        committed (whichever worker process took the purge)."""
        return await self._index.purged_since(meta, since)

    async def remove(self, key_hash: str) -> bool:
        """Remove one entry; True if it was on disk."""
        removed = await self._unlink([key_hash])
        await self.forget(key_hash)
        return removed > 0

    async def forget(self, key_hash: str) -> None:
        """Drop the index row of an entry that is gone (removed as corrupt, say)."""
        await self._index.remove([key_hash])

    # -- the index ---------------------------------------------------------------------
    async def record_purge(self, kind: str, value: str) -> None:
        await self._on_index(self._record_purge, kind, value, self._now())

    def _record_purge(self, kind: str, value: str, now: float) -> None:
        self.index.record_purge(kind, value, now)
        # The stamp lets every worker tell, with one stat, whether a purge came after a
        # fill started (see purged_after); it only moves forward.
        stamp = self.layout.purge_stamp
        stamp.touch()
        when = max(now, stamp.stat().st_mtime)
        os.utime(stamp, (when, when))

    def purged_after(self, since: float) -> bool:
        """Whether any purge, in any worker, was recorded at or after `since`: what a fill
        that started then fetched must not go to a request that comes now."""
        try:
            return os.stat(self.layout.purge_stamp).st_mtime >= since
        except FileNotFoundError:
            return False

    async def keys_under(self, prefix: str) -> list[str]:
        return await self._on_index(self.index.keys_under, prefix)

    async def keys_at(self, path: str) -> list[str]:
        return await self._on_index(self.index.keys_at, path)

    async def keys_tagged(self, tag: str) -> list[str]:
        return await self._on_index(self.index.keys_tagged, tag)

    async def entry_count(self) -> int:
        return await self._on_index(self.index.count)

    async def total_size(self) -> int:
        return await self._on_index(self.index.total_size)

    async def _on_index(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._index.call(fn, *args)

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
        if self._index.stale:
            self._index.stale = False
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
        await self._index.flush_uses()

    async def reconcile(self) -> int:
        """Bring the index in line with the entry files (at start, in the background):
        files it does not know are added, rows without a file are dropped."""
        await self.sweep_unnamed_bodies()
        return await self._index.reconcile(self.layout)

    async def sweep_unnamed_bodies(self) -> int:
        """Remove bodies no head names (a crash or a failed removal between a head and its
        body), once they are too old to belong to a commit in flight. Returns how many."""
        self._bodies_swept_at = self._monotonic()
        loop = asyncio.get_running_loop()
        removed = await loop.run_in_executor(None, _remove_unnamed_bodies, self.layout)
        if removed:
            log.info("unnamed_bodies_removed", count=removed)
        return removed

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

    def close(self) -> None:
        self._index.close()


def _remove_unnamed_bodies(layout: Layout) -> int:
    return sum(1 for orphan in iter_unnamed_bodies(layout) if not orphan.keep and orphan.remove())


def _unlink_all(paths: list[Path]) -> int:
    """Remove these entries; returns how many there were."""
    return sum(remove_entry(path) for path in paths)
