"""open_entry: a hit sees a complete entry or nothing (invariant 1).

An entry is a head (entries/ab/<hash>: metadata + footer) naming a body file
(bodies/ab/<hash>.<body_id>). Entries are written through the real write path (TempBody,
Store.commit); only deliberately broken files are written by hand."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import storage.lookup
import storage.store
from storage.commit import StagedFile
from storage.entry import FOOTER, MAGIC, MAX_META_BYTES, CorruptEntry, EntryMeta, new_body_id
from storage.fileid import FileId
from storage.layout import Layout
from storage.lookup import REPLACED_RETRIES, OpenEntry, open_entry, read_head
from storage.publish import commit_with_head
from storage.remove import remove_entry
from storage.store import Store
from storage.temp import TempBody
from tests.commits import descriptors_into

KEY_HASH = "ab" * 32
BODY = bytes(range(256)) * 40  # 10 KiB
LARGE = os.urandom(3 * 1024 * 1024 + 7)
CHUNK = 64 * 1024


def meta_for(body: bytes, **overrides: object) -> EntryMeta:
    fields: dict[str, object] = {
        "key": "/img/a.png",
        "status": 200,
        "headers": [("Content-Type", "image/png"), ("Content-Length", str(len(body)))],
        "request_time": 1_700_000_000.0,
        "response_time": 1_700_000_001.0,
        "body_length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    fields.update(overrides)
    return EntryMeta(**fields)  # type: ignore[arg-type]


async def stage(layout: Layout, body: bytes) -> TempBody:
    temp = TempBody.create(layout.tmp)
    for at in range(0, len(body), CHUNK):
        await temp.append(body[at : at + CHUNK])
    return temp


def write_entry(
    layout: Layout, body: bytes = BODY, key_hash: str = KEY_HASH, **overrides: object
) -> EntryMeta:
    """Commit an entry through TempBody, as a fill does (in an event loop of its own, so
    that tests can break its files with plain blocking calls); returns its metadata."""

    async def commit() -> EntryMeta:
        temp = await stage(layout, body)
        try:
            meta = meta_for(body, body_id=temp.body_id, **overrides)
            await temp.commit(meta, layout.entry_path(key_hash))
        finally:
            temp.discard()
        return meta

    return asyncio.run(commit())


def open_fds(root: Path) -> int:
    """Descriptors of files in the cache open in this process (others, such as sockets a
    collected object closes meanwhile, would make the count wander)."""
    return len(descriptors_into(root))


def read_body(entry: OpenEntry) -> bytes:
    return os.pread(entry.fd, entry.meta.body_length + 1, 0)


def opened(path: Path) -> OpenEntry:
    entry = open_entry(path)
    assert entry is not None
    return entry


def head_id(path: Path) -> FileId:
    return FileId.of(os.stat(path))


def corrupt(path: Path) -> CorruptEntry:
    with pytest.raises(CorruptEntry) as caught:
        open_entry(path)
    return caught.value


def hand_head(metadata: bytes, magic: bytes = MAGIC) -> bytes:
    return metadata + FOOTER.pack(magic, len(metadata))


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "cache")
    layout.create()
    return layout


@pytest.fixture
def head(layout: Layout) -> Path:
    return layout.entry_path(KEY_HASH)


def test_missing_head_is_no_entry(head: Path) -> None:
    assert open_entry(head) is None


def test_an_unnamed_body_alone_is_no_entry(layout: Layout, head: Path) -> None:
    """A crash between the body's rename and the head's leaves a body nothing names."""
    layout.body_path(KEY_HASH, new_body_id()).write_bytes(BODY)
    assert open_entry(head) is None


@pytest.mark.parametrize("body", [b"", b"x", BODY, LARGE], ids=["empty", "1B", "10K", "3M"])
def test_complete_entry_opens_with_its_body(layout: Layout, head: Path, body: bytes) -> None:
    meta = write_entry(layout, body)
    entry = opened(head)
    try:
        assert entry.meta == meta
        assert read_body(entry) == body
        assert entry.body_path == layout.body_path(KEY_HASH, meta.body_id)
        assert entry.body_path.read_bytes() == body
        # The head is exactly metadata + footer; the body file exactly the body.
        assert head.read_bytes() == meta.encode()
        assert entry.size == len(meta.encode()) + len(body) == meta.file_size()
        assert entry.head_id == head_id(head)
        assert entry.identity == (head.stat().st_ino, head.stat().st_mtime_ns)
    finally:
        os.close(entry.fd)


def test_big_metadata(layout: Layout, head: Path) -> None:
    """Metadata close to the limit still makes a readable head."""
    pad = [(f"X-Pad-{i}", "v" * 1000) for i in range(1000)]
    meta = write_entry(layout, BODY, headers=pad)
    assert MAX_META_BYTES // 2 < len(meta.encode()) - FOOTER.size <= MAX_META_BYTES
    entry = opened(head)
    try:
        assert entry.meta == meta
        assert read_body(entry) == BODY
    finally:
        os.close(entry.fd)


def test_metadata_over_the_limit_is_corrupt(layout: Layout, head: Path) -> None:
    meta = write_entry(layout)
    too_big = replace(meta, headers=[("X-Pad", "v" * MAX_META_BYTES)])
    head.write_bytes(too_big.encode())
    assert corrupt(head).file_id == head_id(head)


def truncations(head_len: int) -> list[int]:
    return sorted(
        {
            0,
            1,
            8,
            FOOTER.size - 1,
            FOOTER.size,
            FOOTER.size + 1,
            head_len - FOOTER.size - 1,
            head_len - FOOTER.size,
            head_len - FOOTER.size + 1,
            head_len - 1,
        }
    )


def test_truncated_head_is_corrupt(layout: Layout, head: Path) -> None:
    write_entry(layout)
    data = head.read_bytes()
    for keep in truncations(len(data)):
        head.write_bytes(data[:keep])
        assert corrupt(head).file_id == head_id(head), keep


@pytest.mark.parametrize(
    "extra",
    [b"x", b"\0" * FOOTER.size, FOOTER.pack(MAGIC, 0), "footer-again", "head-again", "body"],
)
def test_head_with_bytes_appended_is_corrupt(
    layout: Layout, head: Path, extra: bytes | str
) -> None:
    write_entry(layout)
    data = head.read_bytes()
    if extra == "footer-again":
        extra = data[-FOOTER.size :]
    elif extra == "head-again":
        extra = data
    elif extra == "body":
        extra = BODY
    assert isinstance(extra, bytes)
    head.write_bytes(data + extra)
    assert corrupt(head).file_id == head_id(head)


@pytest.mark.parametrize(
    "extra",
    [b" ", b"\n\t ", BODY],
    ids=["space", "whitespace", "body"],  # body: the one-file format, with the new magic
)
def test_head_with_bytes_prepended_is_corrupt(layout: Layout, head: Path, extra: bytes) -> None:
    """The metadata parses (JSON allows leading whitespace), but the file is not exactly
    metadata + footer."""
    write_entry(layout)
    head.write_bytes(extra + head.read_bytes())
    assert corrupt(head).file_id == head_id(head)


def one_file_entry(body: bytes) -> bytes:
    """An entry of the earlier one-file format: body + metadata (no body id) + footer 1."""
    fields = json.loads(meta_for(body).encode()[: -FOOTER.size])
    del fields["body_id"]
    return body + hand_head(json.dumps(fields).encode(), b"PIXCACH1")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"GIF89a",
        b"\x89PNG\r\n\x1a\n" + bytes(2000),
        os.urandom(50_000),
        os.urandom(MAX_META_BYTES + FOOTER.size + 1),
        b"PIXCACH2" * 3,
        b"PIXCACH1" * 3,
        one_file_entry(BODY),
        one_file_entry(b""),
    ],
    ids=[
        "empty",
        "tiny",
        "png-like",
        "random",
        "random-over-limit",
        "magic-only",
        "old-magic-only",
        "one-file-entry",
        "one-file-empty",
    ],
)
def test_foreign_head_is_corrupt(head: Path, content: bytes) -> None:
    head.write_bytes(content)
    assert corrupt(head).file_id == head_id(head)


@pytest.mark.parametrize(
    "metadata",
    [b"{garbage}", b"null", b"[1,2,3]", b"\xff" * 40, b'{"key": "x"}', b" " * 10, b""],
)
def test_garbage_metadata_with_a_valid_footer_is_corrupt(head: Path, metadata: bytes) -> None:
    head.write_bytes(hand_head(metadata))
    assert corrupt(head).file_id == head_id(head)


def wrong_typed_head(body: bytes, named_body: str, **changes: object) -> bytes:
    fields = json.loads(meta_for(body, body_id=named_body).encode()[: -FOOTER.size])
    fields.update(changes)
    return hand_head(json.dumps(fields).encode())


WRONG_TYPES = [
    {"body_length": str(len(BODY))},
    {"status": True},
    {"headers": ""},
    {"vary_fields": "accept"},
    {"body_id": 7},
    {"body_id": "../../entries/ab/" + KEY_HASH},
]


@pytest.mark.parametrize("changes", WRONG_TYPES, ids=lambda c: next(iter(c)))
def test_wrong_typed_metadata_is_corrupt(
    layout: Layout, head: Path, changes: dict[str, object]
) -> None:
    """Valid JSON of the wrong shape, naming a body that is there and complete."""
    meta = write_entry(layout)
    head.write_bytes(wrong_typed_head(BODY, meta.body_id, **changes))
    assert corrupt(head).file_id == head_id(head)


@pytest.mark.parametrize(
    ("body", "damage"),
    [
        (BODY, "truncated-1"),
        (BODY, "truncated-to-0"),
        (b"x", "truncated-to-0"),
        (BODY, "padded-1"),
        (b"", "padded-1"),
        (BODY, "padded-much"),
        (b"", "padded-much"),
        (BODY, "replaced-by-longer"),
    ],
    ids=lambda v: f"{len(v)}B" if isinstance(v, bytes) else v,
)
def test_body_of_another_size_is_corrupt(
    layout: Layout, head: Path, body: bytes, damage: str
) -> None:
    """A truncated or padded body is never served, whatever its head says."""
    meta = write_entry(layout, body)
    path = layout.body_path(KEY_HASH, meta.body_id)
    if damage == "truncated-1":
        os.truncate(path, len(body) - 1)
    elif damage == "truncated-to-0":
        os.truncate(path, 0)
    elif damage == "padded-1":
        path.write_bytes(body + b"\0")
    elif damage == "padded-much":
        path.write_bytes(body + os.urandom(100_000))
    else:
        path.write_bytes(BODY * 2)
    exc = corrupt(head)
    assert "body size" in str(exc)
    assert exc.file_id == head_id(head)


@pytest.mark.parametrize("lie", [-1, 1, "zero"])
def test_head_whose_body_length_lies_is_corrupt(layout: Layout, head: Path, lie: int | str) -> None:
    meta = write_entry(layout)
    length = 0 if lie == "zero" else len(BODY) + int(lie)
    head.write_bytes(replace(meta, body_length=length).encode())
    assert corrupt(head).file_id == head_id(head)


def test_head_whose_body_is_missing_is_corrupt(layout: Layout, head: Path) -> None:
    meta = write_entry(layout)
    layout.body_path(KEY_HASH, meta.body_id).unlink()
    exc = corrupt(head)
    assert str(exc) == "body file missing"
    assert exc.file_id == head_id(head)


def test_a_body_under_another_id_is_not_the_named_one(layout: Layout, head: Path) -> None:
    meta = write_entry(layout)
    named = layout.body_path(KEY_HASH, meta.body_id)
    named.rename(layout.body_path(KEY_HASH, new_body_id()))
    assert str(corrupt(head)) == "body file missing"


def test_a_body_of_another_key_is_not_this_entrys(layout: Layout, head: Path) -> None:
    """Body file names carry the key hash: a head cannot be served another key's body."""
    other = "ab" + "cd" * 31
    meta = write_entry(layout, key_hash=other)
    head.write_bytes(meta.encode())  # a head naming the other key's body id
    assert str(corrupt(head)) == "body file missing"


# -- descriptors ------------------------------------------------------------------------


def break_head(layout: Layout, head: Path, meta: EntryMeta) -> None:
    head.write_bytes(head.read_bytes()[:-1])


def break_body_size(layout: Layout, head: Path, meta: EntryMeta) -> None:
    os.truncate(layout.body_path(KEY_HASH, meta.body_id), len(BODY) - 1)


def remove_body(layout: Layout, head: Path, meta: EntryMeta) -> None:
    layout.body_path(KEY_HASH, meta.body_id).unlink()


@pytest.mark.parametrize(
    "damage", [break_head, break_body_size, remove_body], ids=["head", "body-size", "no-body"]
)
def test_no_descriptor_leaks_when_the_entry_is_corrupt(
    layout: Layout, head: Path, damage: Callable[[Layout, Path, EntryMeta], None]
) -> None:
    damage(layout, head, write_entry(layout))
    before = open_fds(layout.root)
    for _ in range(20):
        corrupt(head)
    assert open_fds(layout.root) == before


def test_an_open_entry_holds_one_descriptor_its_body(layout: Layout, head: Path) -> None:
    write_entry(layout)
    before = open_fds(layout.root)
    for _ in range(20):
        entry = opened(head)
        assert open_fds(layout.root) == before + 1
        assert os.path.samefile(f"/proc/self/fd/{entry.fd}", entry.body_path)
        os.close(entry.fd)
    assert open_fds(layout.root) == before


# -- entries replaced or removed while being read ---------------------------------------


def test_a_reader_keeps_its_body_after_the_entry_is_replaced(layout: Layout, head: Path) -> None:
    old_meta = write_entry(layout, BODY)
    old = opened(head)
    try:
        new_body = os.urandom(5000)
        new_meta = write_entry(layout, new_body)
        assert not old.body_path.exists()  # the replaced body was unlinked...
        assert read_body(old) == BODY  # ...but whoever opened it reads it whole
        assert old.meta == old_meta
        new = opened(head)
        try:
            assert new.meta == new_meta
            assert read_body(new) == new_body
        finally:
            os.close(new.fd)
    finally:
        os.close(old.fd)


@pytest.fixture
def next_entry(layout: Layout) -> Iterator[tuple[TempBody, EntryMeta, bytes]]:
    """A body staged in a temp file, and its metadata, to commit while a reader is between
    reading the head and opening the body."""
    body = os.urandom(7000)
    temp = asyncio.run(stage(layout, body))
    yield temp, meta_for(body, body_id=temp.body_id), body
    temp.discard()


def commit_now(layout: Layout, head: Path, temp: TempBody, meta: EntryMeta) -> None:
    """What TempBody.commit runs in its thread, run here, synchronously."""
    body = StagedFile(temp.fd, temp.path, layout.body_path(head.name, temp.body_id), temp.written)
    commit_with_head(layout.tmp, meta, head, body)


def test_open_returns_the_new_entry_when_the_head_is_replaced_between_reads(
    layout: Layout,
    head: Path,
    next_entry: tuple[TempBody, EntryMeta, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old_meta = write_entry(layout, BODY)
    temp, new_meta, new_body = next_entry
    reads: list[EntryMeta] = []

    def read_then_replace(path: Path) -> tuple[EntryMeta, FileId] | None:
        found = read_head(path)
        assert found is not None
        reads.append(found[0])
        if len(reads) == 1:  # another worker commits after this reader read the old head
            commit_now(layout, head, temp, new_meta)
        return found

    monkeypatch.setattr(storage.lookup, "read_head", read_then_replace)
    entry = opened(head)
    try:
        assert reads == [old_meta, new_meta]
        assert entry.meta == new_meta
        assert read_body(entry) == new_body
        assert entry.head_id == head_id(head)
    finally:
        os.close(entry.fd)
    assert not layout.body_path(KEY_HASH, old_meta.body_id).exists()


def test_open_finds_nothing_when_the_entry_is_removed_between_reads(
    layout: Layout, head: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_entry(layout)

    def read_then_purge(path: Path) -> tuple[EntryMeta, FileId] | None:
        found = read_head(path)
        remove_entry(path)
        return found

    monkeypatch.setattr(storage.lookup, "read_head", read_then_purge)
    before = open_fds(layout.root)
    assert open_entry(head) is None
    assert open_fds(layout.root) == before


def test_an_entry_replaced_on_every_read_is_a_miss_not_corrupt(
    layout: Layout, head: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_entry(layout)
    staged = []
    for _ in range(REPLACED_RETRIES):
        body = os.urandom(100)
        temp = asyncio.run(stage(layout, body))
        staged.append((temp, meta_for(body, body_id=temp.body_id)))
    pending = list(staged)

    def read_then_replace(path: Path) -> tuple[EntryMeta, FileId] | None:
        found = read_head(path)
        commit_now(layout, head, *pending.pop(0))
        return found

    monkeypatch.setattr(storage.lookup, "read_head", read_then_replace)
    try:
        assert open_entry(head) is None
        assert pending == []
    finally:
        for temp, _ in staged:
            temp.discard()
    monkeypatch.undo()
    entry = opened(head)  # the last commit is a complete entry for the next request
    try:
        assert entry.meta == staged[-1][1]
    finally:
        os.close(entry.fd)


# -- the Store turns a corrupt entry into a miss, and removes it ----------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "cache")
    store.prepare()
    yield store
    store.close()


async def store_entry(store: Store, body: bytes = BODY, key_hash: str = KEY_HASH) -> EntryMeta:
    """Commit an entry through Store.commit, as a fill does; returns the metadata stored."""
    temp = store.begin()
    try:
        for at in range(0, len(body), CHUNK):
            await temp.append(body[at : at + CHUNK])
        await store.commit(temp, meta_for(body), key_hash)
    finally:
        temp.discard()
    found = read_head(store.layout.entry_path(key_hash))
    assert found is not None
    return found[0]


def files_of_key(store: Store, key_hash: str = KEY_HASH) -> list[Path]:
    bucket = key_hash[:2]
    return [
        *(store.layout.entries / bucket).glob(key_hash),
        *(store.layout.bodies / bucket).glob(f"{key_hash}.*"),
    ]


async def test_store_open_returns_a_complete_entry(store: Store) -> None:
    meta = await store_entry(store)
    entry = await store.open(KEY_HASH)
    assert entry is not None
    try:
        assert entry.meta == meta
        assert read_body(entry) == BODY
    finally:
        os.close(entry.fd)
    assert store.corrupt_found == 0


def truncate_head(store: Store, meta: EntryMeta) -> None:
    path = store.layout.entry_path(KEY_HASH)
    path.write_bytes(path.read_bytes()[:-5])


def wrong_type_head(store: Store, meta: EntryMeta) -> None:
    path = store.layout.entry_path(KEY_HASH)
    path.write_bytes(wrong_typed_head(BODY, meta.body_id, body_length=str(len(BODY))))


def garbage_head(store: Store, meta: EntryMeta) -> None:
    store.layout.entry_path(KEY_HASH).write_bytes(os.urandom(3000))


def truncate_body(store: Store, meta: EntryMeta) -> None:
    os.truncate(store.layout.body_path(KEY_HASH, meta.body_id), len(BODY) - 1)


def pad_body(store: Store, meta: EntryMeta) -> None:
    with open(store.layout.body_path(KEY_HASH, meta.body_id), "ab") as f:
        f.write(b"\0")


@pytest.mark.parametrize(
    "damage",
    [truncate_head, wrong_type_head, garbage_head, truncate_body, pad_body],
    ids=["truncated-head", "wrong-typed-head", "garbage-head", "truncated-body", "padded-body"],
)
async def test_store_treats_a_corrupt_entry_as_a_miss_and_removes_head_and_body(
    store: Store, damage: Callable[[Store, EntryMeta], None]
) -> None:
    reported: list[tuple[str, str]] = []
    store.on_corrupt = lambda key_hash, reason: reported.append((key_hash, reason))
    neighbour = "ab" + "cd" * 31  # same bucket, another key
    await store_entry(store, b"neighbour", neighbour)
    damage(store, await store_entry(store))
    assert await store.entry_count() == 2
    assert await store.open(KEY_HASH) is None
    assert files_of_key(store) == []
    assert store.corrupt_found == 1
    assert [key for key, _ in reported] == [KEY_HASH]
    assert await store.entry_count() == 1
    # Another request finds nothing (and nothing corrupt) there now.
    assert await store.open(KEY_HASH) is None
    assert store.corrupt_found == 1
    # The entry next to it is untouched.
    entry = await store.open(neighbour)
    assert entry is not None
    try:
        assert read_body(entry) == b"neighbour"
    finally:
        os.close(entry.fd)


async def test_store_treats_a_head_without_its_body_as_a_miss_and_removes_it(
    store: Store,
) -> None:
    reported: list[str] = []
    store.on_corrupt = lambda key_hash, reason: reported.append(reason)
    meta = await store_entry(store)
    store.layout.body_path(KEY_HASH, meta.body_id).unlink()
    assert await store.open(KEY_HASH) is None
    assert not store.layout.entry_path(KEY_HASH).exists()
    assert files_of_key(store) == []
    assert reported == ["body file missing"]
    assert store.corrupt_found == 1
    assert await store.entry_count() == 0


async def test_store_keeps_an_entry_committed_after_the_corrupt_one_was_found(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the very head found corrupt is removed: a fill that replaced it meanwhile stays."""
    meta = await store_entry(store)
    truncate_body(store, meta)
    new_body = os.urandom(4000)
    temp = store.begin()
    await temp.append(new_body)
    real_open_entry = storage.store.open_entry

    def open_then_fill(path: Path, check_max: int = 0) -> OpenEntry | None:
        try:
            return real_open_entry(path, check_max)
        finally:
            commit_now(store.layout, path, temp, meta_for(new_body, body_id=temp.body_id))

    monkeypatch.setattr(storage.store, "open_entry", open_then_fill)
    try:
        assert await store.open(KEY_HASH) is None
    finally:
        temp.discard()
    assert store.corrupt_found == 1
    monkeypatch.undo()
    entry = await store.open(KEY_HASH)
    assert entry is not None
    try:
        assert read_body(entry) == new_body
    finally:
        os.close(entry.fd)


async def test_store_refresh_commits_a_new_head_for_the_same_body(store: Store) -> None:
    meta = await store_entry(store)
    body_path = store.layout.body_path(KEY_HASH, meta.body_id)
    body_inode = body_path.stat().st_ino
    fresh = replace(meta, headers=[("Content-Type", "image/png"), ("ETag", '"v2"')])
    await store.refresh(KEY_HASH, fresh)
    entry = await store.open(KEY_HASH)
    assert entry is not None
    try:
        assert entry.meta == fresh
        assert read_body(entry) == BODY
        assert entry.body_path == body_path
    finally:
        os.close(entry.fd)
    assert body_path.stat().st_ino == body_inode
    assert files_of_key(store) == [store.layout.entry_path(KEY_HASH), body_path]
    assert list(store.layout.tmp.iterdir()) == []
