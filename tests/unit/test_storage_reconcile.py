"""Store.reconcile at start: the index learns the entries on disk, and bodies that no head
names (a crash between a commit's two renames) are removed once they are old enough."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from storage.entry import EntryMeta, new_body_id
from storage.store import UNNAMED_BODY_SWEEP, Store
from storage.walk import TEMP_GRACE

BODY = b"image bytes " * 500


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "cache")
    store.prepare()
    yield store
    store.close()


async def commit(store: Store, key_hash: str, body: bytes = BODY) -> EntryMeta:
    temp = store.begin()
    try:
        await temp.append(body)
        meta = EntryMeta(
            key=f"/{key_hash[:8]}.jpg",
            status=200,
            headers=[("Content-Type", "image/jpeg")],
            request_time=time.time(),
            response_time=time.time(),
            body_length=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
        )
        await store.commit(temp, meta, key_hash)
    finally:
        temp.discard()
    entry = await store.open(key_hash)
    assert entry is not None
    os.close(entry.fd)
    return entry.meta


def stray_body(store: Store, key_hash: str, age: float) -> Path:
    """A body file as a crash between the renames leaves it: in place, named by no head."""
    path = store.layout.body_path(key_hash, new_body_id())
    path.write_bytes(b"left by a crash")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


async def test_reconcile_indexes_entries_and_removes_old_unnamed_bodies(store: Store) -> None:
    kept = "aa" * 32
    meta = await commit(store, kept)
    named = store.layout.body_path(kept, meta.body_id)
    beside_an_entry = stray_body(store, kept, TEMP_GRACE + 60)
    without_a_head = stray_body(store, "bb" * 32, TEMP_GRACE + 60)
    young = stray_body(store, "cc" * 32, 10)
    await store.forget(kept)  # as if the index had lost it
    assert await store.entry_count() == 0

    assert await store.reconcile() == 1
    assert await store.entry_count() == 1
    assert named.read_bytes() == BODY  # the entry's own body stays
    assert not beside_an_entry.exists() and not without_a_head.exists()
    assert young.exists()  # may be a commit in flight in another process
    entry = await store.open(kept)
    assert entry is not None
    try:
        assert os.pread(entry.fd, len(BODY) + 1, 0) == BODY
    finally:
        os.close(entry.fd)


async def test_replacing_and_purging_leave_no_body_behind(store: Store) -> None:
    key_hash = "dd" * 32
    first = await commit(store, key_hash, b"first")
    second = await commit(store, key_hash, b"second body")
    assert first.body_id != second.body_id
    bodies = sorted(p.name for p in (store.layout.bodies / "dd").iterdir())
    assert bodies == [f"{key_hash}.{second.body_id}"]
    await store.purge([key_hash])
    assert list((store.layout.bodies / "dd").iterdir()) == []
    assert list((store.layout.entries / "dd").iterdir()) == []


async def test_upkeep_sweeps_unnamed_bodies_while_running(store: Store) -> None:
    """Not only at start: a long-running instance reclaims what a failed removal or a
    crashed worker left, once it is too old to be a commit in flight."""
    old = stray_body(store, "ee" * 32, TEMP_GRACE + 60)
    young = stray_body(store, "ef" * 32, 10)
    await store.maintain()  # the first upkeep round sweeps
    assert not old.exists() and young.exists()


async def test_upkeep_sweeps_on_schedule_on_a_machine_booted_a_moment_ago(
    tmp_path: Path,
) -> None:
    """The monotonic clock starts near zero at boot: the first round sweeps all the same,
    and the next sweep comes UNNAMED_BODY_SWEEP seconds later."""
    uptime = [5.0]
    clock = SimpleNamespace(now=time.time, monotonic=lambda: uptime[0], sleep=asyncio.sleep)
    store = Store(tmp_path / "booted", clock=clock)
    store.prepare()
    try:
        first = stray_body(store, "e1" * 32, TEMP_GRACE + 60)
        await store.maintain()
        assert not first.exists()
        second = stray_body(store, "e2" * 32, TEMP_GRACE + 60)
        uptime[0] += UNNAMED_BODY_SWEEP - 1
        await store.maintain()
        assert second.exists()  # not due yet
        uptime[0] += 2
        await store.maintain()
        assert not second.exists()
    finally:
        store.close()
