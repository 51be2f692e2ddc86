"""Entries found by a property of their request path that the proxy computes (their source
image), and warmed entries ranked least recently used.

Each entry's source is one of its purge tags, written in the same index transaction as the
entry's row and rebuilt from the entry files by `Store.reconcile`, so the index answers for
it across restarts. Two kinds of entry it cannot answer for are found here as well: rows
indexed without a tag of the current grammar (before the grammar was set, or under another
one), whose paths are read again; and entry files the index lost (an index write that
failed, a crash between commit and index), found by listing the entry files.

These run on the store's index thread, on its connection (the index's own functions do the
same), or, for the file listing, on a thread of the default executor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from storage.entry import CorruptEntry
from storage.index import Index
from storage.layout import Layout
from storage.lookup import read_head
from storage.store import Store
from storage.walk import iter_entry_files

PathMatch = Callable[[str], bool]


async def keys_derived(store: Store, tag: str, tag_prefix: str, matches: PathMatch) -> set[str]:
    """Every entry tagged `tag`, and every entry without a `tag_prefix` tag, or not in the
    index at all, whose request path `matches`."""
    await store._index.settled()  # rows of commits that just happened are in the index
    keys = set(await store.keys_tagged(tag))
    untagged = await store._on_index(_untagged_rows, store.index, tag_prefix)
    keys.update(key for key, path in untagged if matches(path))
    known = await store._on_index(store.index.keys)
    loop = asyncio.get_running_loop()
    lost = await loop.run_in_executor(None, _unindexed_entries, store.layout, known)
    keys.update(key for key, path in lost if matches(path))
    return keys


def _untagged_rows(index: Index, tag_prefix: str) -> list[tuple[str, str]]:
    rows = index._conn().execute(
        "SELECT key, path FROM entry_paths WHERE instr(tags, ?) = 0", (" " + tag_prefix,)
    )
    return list(rows)


def _unindexed_entries(layout: Layout, known: set[str]) -> list[tuple[str, str]]:
    """(key hash, request path) of each entry file the index does not know."""
    found = []
    for path in iter_entry_files(layout):
        if path.name in known:
            continue
        try:
            head = read_head(path)
        except (CorruptEntry, OSError):
            continue  # gone meanwhile, or corrupt: the hit path and verify deal with it
        if head is not None:
            found.append((path.name, head[0].key))
    return found


async def rank_least_recent(store: Store, keys: list[str], since: float) -> int:
    """Make these entries the least recently used, if nothing used them after `since`
    (their commit): warmed entries are evicted before any entry a client asked for."""
    await store._index.settled()
    return await store._on_index(_rank_least_recent, store.index, keys, since)


def _rank_least_recent(index: Index, keys: list[str], since: float) -> int:
    db = index._conn()
    db.execute("BEGIN IMMEDIATE")
    try:
        (oldest,) = db.execute("SELECT coalesce(min(used), 0) FROM entries").fetchone()
        changed = 0
        for key in keys:
            # Rows written since the warm request began: its commit (or a hit flushed in
            # the moment since, which is ranked with it).
            cursor = db.execute(
                "UPDATE entries SET used = ? WHERE key = ? AND used >= ? AND used > ?",
                (oldest - 1, key, since, oldest),
            )
            changed += cursor.rowcount
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return changed
