"""Walking the cache directory: which files are entries a lookup can reach, and which are
orphans that nothing will ever find (misnamed or misplaced files, temp files, strays)."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.entry import CorruptEntry
from storage.layout import Layout
from storage.lookup import read_head

# A temp file younger than this may be a fill in flight in a running pixcache.
TEMP_GRACE = 3600.0
BUCKET_NAME = re.compile(r"[0-9a-f]{2}")
ENTRY_NAME = re.compile(r"[0-9a-f]{64}")
BODY_NAME = re.compile(r"([0-9a-f]{64})\.([0-9a-f]{32})")
# SQLite's companions of the index file, present while a pixcache runs (or after a crash).
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def _listdir(path: Path | str) -> list[os.DirEntry[str]]:
    """A directory's items, sorted; [] if it vanished or is not a directory."""
    try:
        with os.scandir(path) as items:
            return sorted(items, key=lambda item: item.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_bucket(item: os.DirEntry[str]) -> bool:
    return bool(BUCKET_NAME.fullmatch(item.name)) and item.is_dir(follow_symlinks=False)


def _is_entry(item: os.DirEntry[str], bucket: str) -> bool:
    # Only a file a lookup can reach: entry_path(h) is entries/h[:2]/h.
    return (
        bool(ENTRY_NAME.fullmatch(item.name))
        and item.name[:2] == bucket
        and item.is_file(follow_symlinks=False)
    )


def bucket_dirs(layout: Layout) -> list[Path]:
    return bucket_dirs_of(layout.entries)


def bucket_dirs_of(top: Path) -> list[Path]:
    return [Path(item.path) for item in _listdir(top) if _is_bucket(item)]


def entry_files_in(bucket: Path) -> list[Path]:
    return [Path(item.path) for item in _listdir(bucket) if _is_entry(item, bucket.name)]


def iter_entry_files(layout: Layout) -> Iterator[Path]:
    """Every file a lookup could find: entries/<2 hex>/<64 hex>, a regular file."""
    for bucket in bucket_dirs(layout):
        yield from entry_files_in(bucket)


@dataclass(frozen=True)
class Orphan:
    path: Path
    reason: str
    size: int  # bytes; for a directory, of the files in it
    keep: str = ""  # why --repair leaves it alone; empty when it may be removed

    def remove(self) -> bool:
        """Remove it (a directory with everything in it, never following a symlink)."""
        try:
            if self.path.is_dir() and not self.path.is_symlink():
                shutil.rmtree(self.path)
            else:
                self.path.unlink()
        except FileNotFoundError:
            return False
        return True


def _size_and_mtime(item: os.DirEntry[str]) -> tuple[int, float] | None:
    """None if it vanished (a temp file committed or discarded while we looked)."""
    try:
        st = item.stat(follow_symlinks=False)
        if not item.is_dir(follow_symlinks=False):
            return st.st_size, st.st_mtime
        size = 0
        for top, _dirs, files in os.walk(item.path):
            for name in files:
                try:
                    size += os.lstat(os.path.join(top, name)).st_size
                except FileNotFoundError:
                    pass
        return size, st.st_mtime
    except FileNotFoundError:
        return None


def _why_not_entry(item: os.DirEntry[str], bucket: str) -> str:
    if not ENTRY_NAME.fullmatch(item.name):
        return "name is not an entry hash"
    if item.name[:2] != bucket:
        return f"entry in the wrong directory (belongs in {item.name[:2]}/)"
    return "not a regular file"


def _orphan(item: os.DirEntry[str], reason: str, keep: str = "") -> Orphan | None:
    found = _size_and_mtime(item)
    return None if found is None else Orphan(Path(item.path), reason, found[0], keep)


def _young_or_old(item: os.DirEntry[str], now: float, reason: str, why: str) -> Orphan | None:
    """An orphan that --repair leaves alone while it is younger than TEMP_GRACE."""
    found = _size_and_mtime(item)
    if found is None:
        return None
    size, mtime = found
    young = now - mtime < TEMP_GRACE
    keep = f"younger than {TEMP_GRACE / 3600:g} h, {why}" if young else ""
    return Orphan(Path(item.path), reason, size, keep)


def _temp_orphan(item: os.DirEntry[str], now: float) -> Orphan | None:
    return _young_or_old(item, now, "temp file", "may be a fill in flight")


def root_names(layout: Layout) -> frozenset[str]:
    """What belongs at the top of a cache dir. lost+found is the filesystem's when the cache
    dir is a mount point: not ours to report."""
    index = layout.index_file.name
    return frozenset(
        {
            layout.entries.name,
            layout.bodies.name,
            layout.tmp.name,
            layout.lock_file.name,
            layout.upkeep_lock_file.name,
            "lost+found",
        }
        | {index + suffix for suffix in SQLITE_SUFFIXES}
    )


def _iter_orphans(layout: Layout, now: float) -> Iterator[Orphan | None]:
    known = root_names(layout)
    for item in _listdir(layout.root):
        if item.name not in known:
            # Never deleted: the index or lock files of a newer pixcache may live here.
            yield _orphan(
                item, "not part of the cache layout", "outside entries/, bodies/ and tmp/"
            )
    for item in _listdir(layout.entries):
        if not _is_bucket(item):
            yield _orphan(item, "not one of the 00..ff entry directories")
            continue
        for child in _listdir(item.path):
            if not _is_entry(child, item.name):
                yield _orphan(child, _why_not_entry(child, item.name))
    for item in _listdir(layout.bodies):
        if not _is_bucket(item):
            yield _orphan(item, "not one of the 00..ff body directories")
    yield from _unnamed_bodies(layout, now, thorough=True)
    for item in _listdir(layout.tmp):
        yield _temp_orphan(item, now)


def _body_orphan(item: os.DirEntry[str], bucket: str) -> str:
    """Why a file in bodies/<bucket>/ cannot be a body ("" if it can)."""
    if not BODY_NAME.fullmatch(item.name):
        return "name is not a body name (<hash>.<id>)"
    if item.name[:2] != bucket:
        return f"body in the wrong directory (belongs in {item.name[:2]}/)"
    if not item.is_file(follow_symlinks=False):
        return "not a regular file"
    return ""


def _named_body_id(layout: Layout, key_hash: str) -> str | None:
    """The body id the head of `key_hash` names; "" when the head is unreadable (the entry
    check judges it, with its body), None when there is no head."""
    try:
        found = read_head(layout.entry_path(key_hash))
    except (CorruptEntry, OSError):
        return ""
    return None if found is None else found[0].body_id


def _unnamed_bodies(layout: Layout, now: float, *, thorough: bool) -> Iterator[Orphan | None]:
    for bucket in bucket_dirs_of(layout.bodies):
        heads = {path.name for path in entry_files_in(layout.entries / bucket.name)}
        by_hash: dict[str, list[os.DirEntry[str]]] = {}
        for item in _listdir(bucket):
            reason = _body_orphan(item, bucket.name)
            if reason:
                if thorough:  # left to `pixcache verify`, which reports what it removes
                    yield _orphan(item, reason)
            else:
                by_hash.setdefault(item.name[:64], []).append(item)
        for key_hash, bodies in by_hash.items():
            if key_hash not in heads:
                named: str | None = None
            elif thorough or len(bodies) > 1:
                named = _named_body_id(layout, key_hash)
                if named == "":
                    continue
            else:
                continue  # one body and a head: the head names it (verify reads to be sure)
            for item in bodies:
                if item.name[65:] != named:
                    why = "may be a commit in flight"
                    yield _young_or_old(item, now, "body no entry names", why)


def iter_unnamed_bodies(layout: Layout, *, now: float | None = None) -> Iterator[Orphan]:
    """Body files no head names (a crash between a commit's renames, or a removal racing a
    commit). Cheap: reads a head only where its hash has several bodies."""
    now = time.time() if now is None else now
    found = _unnamed_bodies(layout, now, thorough=False)
    return (orphan for orphan in found if orphan is not None)


def iter_orphans(layout: Layout, *, now: float | None = None) -> Iterator[Orphan]:
    """Everything in the cache dir that no lookup will ever find; `keep` says which of it
    --repair must leave alone. Items that vanish while we look are skipped."""
    now = time.time() if now is None else now
    return (orphan for orphan in _iter_orphans(layout, now) if orphan is not None)
