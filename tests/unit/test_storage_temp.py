"""TempBody: a body streamed into a temp file, hashed as it goes, committed or discarded.

Committing it puts the body under its own name (bodies/ab/<hash>.<body_id>) and a head
naming it at the entry's path; the body the replaced head named is removed."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from storage.commit import CommitRefused
from storage.entry import BODY_ID, EntryMeta, new_body_id
from storage.layout import Layout
from storage.lookup import open_entry
from storage.publish import commit_with_head
from storage.temp import TempBody
from tests.entries import meta_for

CHUNKS = [b"\x89PNG\r\n\x1a\n", b"", os.urandom(70_000), b"x" * 3, os.urandom(1)]
KEY_HASH = "ab" * 32


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "cache")
    layout.create()
    return layout


async def committed(layout: Layout, body: bytes, key_hash: str = KEY_HASH) -> EntryMeta:
    temp = TempBody.create(layout.tmp)
    try:
        await temp.append(body)
        meta = meta_for(temp)
        await temp.commit(meta, layout.entry_path(key_hash))
    finally:
        temp.discard()
    return meta


def stored(layout: Layout, key_hash: str = KEY_HASH) -> tuple[EntryMeta, bytes]:
    """What a hit would get: the metadata and the whole body."""
    entry = open_entry(layout.entry_path(key_hash))
    assert entry is not None
    try:
        return entry.meta, os.pread(entry.fd, entry.meta.body_length + 1, 0)
    finally:
        os.close(entry.fd)


def bodies_of(layout: Layout, key_hash: str = KEY_HASH) -> list[Path]:
    return sorted((layout.bodies / key_hash[:2]).glob(f"{key_hash}.*"))


async def test_append_hashes_and_counts_the_chunks(layout: Layout) -> None:
    temp = TempBody.create(layout.tmp)
    try:
        for chunk in CHUNKS:
            await temp.append(chunk)
        body = b"".join(CHUNKS)
        assert temp.sha256 == hashlib.sha256(body).hexdigest()
        assert temp.written == len(body)
        assert temp.path.parent == layout.tmp
        assert temp.path.read_bytes() == body
    finally:
        temp.discard()


async def test_empty_body_hash(layout: Layout) -> None:
    temp = TempBody.create(layout.tmp)
    try:
        assert temp.sha256 == hashlib.sha256(b"").hexdigest()
        assert temp.written == 0
    finally:
        temp.discard()


async def test_each_temp_body_gets_its_own_body_id(layout: Layout) -> None:
    temps = [TempBody.create(layout.tmp) for _ in range(50)]
    try:
        assert len({temp.body_id for temp in temps}) == 50
        assert all(BODY_ID.fullmatch(temp.body_id) for temp in temps)
    finally:
        for temp in temps:
            temp.discard()


async def test_readers_follow_the_growing_file(layout: Layout) -> None:
    temp = TempBody.create(layout.tmp)
    fd = temp.dup_fd()
    try:
        await temp.append(b"first ")
        assert os.pread(fd, 100, 0) == b"first "
        await temp.append(b"second")
        assert os.pread(fd, 100, 0) == b"first second"
    finally:
        os.close(fd)
        temp.discard()


async def test_discard_removes_the_temp_file_and_is_idempotent(layout: Layout) -> None:
    temp = TempBody.create(layout.tmp)
    await temp.append(b"partial body")
    assert temp.path.exists()
    temp.discard()
    assert not temp.path.exists()
    assert list(layout.tmp.iterdir()) == []
    temp.discard()  # a second call is harmless


async def test_commit_makes_the_entry_readable(layout: Layout) -> None:
    temp = TempBody.create(layout.tmp)
    for chunk in CHUNKS:
        await temp.append(chunk)
    meta = meta_for(temp)
    final = layout.entry_path(KEY_HASH)
    await temp.commit(meta, final)
    assert not temp.path.exists()
    assert list(layout.tmp.iterdir()) == []  # neither the body's temp nor the head's
    body = b"".join(CHUNKS)
    assert final.read_bytes() == meta.encode()
    assert bodies_of(layout) == [layout.body_path(KEY_HASH, temp.body_id)]
    assert layout.body_path(KEY_HASH, temp.body_id).read_bytes() == body
    assert stored(layout) == (meta, body)
    assert meta.sha256 == hashlib.sha256(body).hexdigest()
    # discard after a commit must not remove the committed entry
    temp.discard()
    assert stored(layout) == (meta, body)


async def test_an_empty_body_commits_an_empty_body_file(layout: Layout) -> None:
    meta = await committed(layout, b"")
    assert layout.body_path(KEY_HASH, meta.body_id).read_bytes() == b""
    assert stored(layout) == (meta, b"")


async def test_a_reader_keeps_its_bytes_across_the_commit(layout: Layout) -> None:
    temp = TempBody.create(layout.tmp)
    await temp.append(b"streamed body")
    fd = temp.dup_fd()
    try:
        await temp.commit(meta_for(temp), layout.entry_path("cd" * 32))
        assert os.pread(fd, 100, 0) == b"streamed body"
    finally:
        os.close(fd)


async def test_replacing_an_entry_removes_the_old_body_file(layout: Layout) -> None:
    old = await committed(layout, b"old body")
    new = await committed(layout, b"new body, longer")
    assert stored(layout) == (new, b"new body, longer")
    assert bodies_of(layout) == [layout.body_path(KEY_HASH, new.body_id)]
    assert not layout.body_path(KEY_HASH, old.body_id).exists()
    assert list(layout.tmp.iterdir()) == []


async def test_replacing_an_entry_leaves_other_keys_alone(layout: Layout) -> None:
    neighbour = "ab" + "cd" * 31
    kept = await committed(layout, b"neighbour", neighbour)
    await committed(layout, b"old body")
    await committed(layout, b"new body")
    assert stored(layout, neighbour) == (kept, b"neighbour")


async def test_replacing_a_corrupt_head_makes_a_readable_entry(layout: Layout) -> None:
    layout.entry_path(KEY_HASH).write_bytes(b"not a head at all")
    meta = await committed(layout, b"fresh body")
    assert stored(layout) == (meta, b"fresh body")


async def test_head_only_refresh_keeps_the_body(layout: Layout) -> None:
    """After a 304 the freshened headers are stored for the same body file."""
    meta = await committed(layout, b"the body")
    body_path = layout.body_path(KEY_HASH, meta.body_id)
    inode = body_path.stat().st_ino
    fresh = replace(meta, headers=[("Content-Type", "image/png"), ("ETag", '"2"')])
    commit_with_head(layout.tmp, fresh, layout.entry_path(KEY_HASH), None)
    assert stored(layout) == (fresh, b"the body")
    assert bodies_of(layout) == [body_path]
    assert body_path.stat().st_ino == inode
    assert list(layout.tmp.iterdir()) == []


async def test_head_only_refresh_of_a_replaced_body_is_refused(layout: Layout) -> None:
    """A 304 that arrives after another fill replaced the entry: its head would name a body
    that is gone. It is not committed; the newer entry stays."""
    old = await committed(layout, b"old body")
    new = await committed(layout, b"new body")
    with pytest.raises(CommitRefused):
        commit_with_head(layout.tmp, replace(old, status=203), layout.entry_path(KEY_HASH), None)
    assert stored(layout) == (new, b"new body")
    assert list(layout.tmp.iterdir()) == []


async def test_commit_refuses_when_the_file_grew_behind_its_back(layout: Layout) -> None:
    """A second writer appended to the temp file: the size check refuses the commit."""
    old = await committed(layout, b"previous body")
    temp = TempBody.create(layout.tmp)
    await temp.append(b"body")
    meta = meta_for(temp)
    intruder = os.open(temp.path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(intruder, b"x" * 100)
    finally:
        os.close(intruder)
    with pytest.raises(CommitRefused):
        await temp.commit(meta, layout.entry_path(KEY_HASH))
    assert stored(layout) == (old, b"previous body")
    assert bodies_of(layout) == [layout.body_path(KEY_HASH, old.body_id)]
    assert list(layout.tmp.iterdir()) == [temp.path]  # no head temp left behind
    temp.discard()
    assert list(layout.tmp.iterdir()) == []


def lying(meta: EntryMeta, lie: str) -> EntryMeta:
    if lie == "shorter":
        return replace(meta, body_length=meta.body_length - 1)
    if lie == "longer":
        return replace(meta, body_length=meta.body_length + 1)
    if lie == "sha256":
        return replace(meta, sha256=hashlib.sha256(b"other bytes").hexdigest())
    if lie == "other-body-id":
        return replace(meta, body_id=new_body_id())
    assert lie == "no-body-id"
    return replace(meta, body_id="")


@pytest.mark.parametrize("lie", ["shorter", "longer", "sha256", "other-body-id", "no-body-id"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
async def test_commit_refuses_metadata_that_does_not_describe_the_bytes(
    layout: Layout, lie: str, existing: bool
) -> None:
    if existing:
        old = await committed(layout, b"previous body")
    temp = TempBody.create(layout.tmp)
    try:
        await temp.append(b"the bytes written")
        meta = lying(meta_for(temp), lie)
        with pytest.raises(CommitRefused):
            await temp.commit(meta, layout.entry_path(KEY_HASH))
        if existing:
            assert stored(layout) == (old, b"previous body")
            assert bodies_of(layout) == [layout.body_path(KEY_HASH, old.body_id)]
        else:
            assert open_entry(layout.entry_path(KEY_HASH)) is None
            assert bodies_of(layout) == []
        assert list(layout.tmp.iterdir()) == [temp.path]
    finally:
        temp.discard()
    assert list(layout.tmp.iterdir()) == []


async def test_a_refresh_whose_body_is_removed_during_the_switch_leaves_no_head(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An eviction removes the body between the refresh's check and its rename: the new
    head must not outlive its body (the next lookup would call it corrupt)."""
    import storage.publish

    old = await committed(layout, b"old body")
    body = layout.body_path(KEY_HASH, old.body_id)
    real_commit = storage.publish.commit_entry

    def evicted_meanwhile(head: object, staged_body: object) -> None:
        body.unlink()
        real_commit(head, staged_body)  # type: ignore[arg-type]

    monkeypatch.setattr(storage.publish, "commit_entry", evicted_meanwhile)
    with pytest.raises(CommitRefused):
        commit_with_head(layout.tmp, replace(old, status=203), layout.entry_path(KEY_HASH), None)
    assert not layout.entry_path(KEY_HASH).exists()
    assert list(layout.tmp.iterdir()) == []
