"""open_entry: a hit sees a complete entry or nothing (invariant 1)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from storage.entry import FOOTER, MAGIC, CorruptEntry, EntryMeta
from storage.lookup import TAIL_READ, OpenEntry, open_entry
from storage.store import Store

BODY = bytes(range(256)) * 40  # 10 KiB


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


def write_entry(path: Path, body: bytes = BODY, meta: EntryMeta | None = None) -> bytes:
    data = body + (meta or meta_for(body)).encode()
    path.write_bytes(data)
    return data


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def read_body(entry: OpenEntry) -> bytes:
    return os.pread(entry.fd, entry.meta.body_length, 0)


@pytest.fixture
def entry_path(tmp_path: Path) -> Path:
    return tmp_path / "entry"


def test_missing_file_is_no_entry(entry_path: Path) -> None:
    assert open_entry(entry_path) is None


@pytest.mark.parametrize(
    "body", [b"", b"x", BODY, os.urandom(3 * TAIL_READ)], ids=["empty", "1B", "10K", "48K"]
)
def test_complete_entry_opens_with_its_body(entry_path: Path, body: bytes) -> None:
    data = write_entry(entry_path, body)
    entry = open_entry(entry_path)
    assert entry is not None
    try:
        assert entry.meta == meta_for(body)
        assert entry.size == len(data)
        assert read_body(entry) == body
    finally:
        os.close(entry.fd)


def test_metadata_larger_than_one_tail_read(entry_path: Path) -> None:
    """The second read path: footer and metadata do not fit in the first TAIL_READ bytes."""
    meta = meta_for(BODY, headers=[(f"X-Pad-{i}", "v" * 100) for i in range(300)])
    assert len(meta.encode()) > TAIL_READ
    write_entry(entry_path, BODY, meta)
    entry = open_entry(entry_path)
    assert entry is not None
    try:
        assert entry.meta == meta
        assert read_body(entry) == BODY
    finally:
        os.close(entry.fd)


def truncations(data_len: int, trailer_len: int) -> list[int]:
    return sorted(
        {
            0,
            1,
            8,
            FOOTER.size - 1,
            FOOTER.size,
            FOOTER.size + 1,
            trailer_len - 1,
            trailer_len,
            trailer_len + 1,
            data_len - 1,
        }
    )


def test_truncated_entry_is_corrupt(entry_path: Path) -> None:
    data = write_entry(entry_path)
    trailer_len = len(meta_for(BODY).encode())
    for keep in truncations(len(data), trailer_len):
        entry_path.write_bytes(data[:keep])
        with pytest.raises(CorruptEntry):
            open_entry(entry_path)


@pytest.mark.parametrize(
    "extra",
    [
        b"x",
        b"\0" * FOOTER.size,
        FOOTER.pack(MAGIC, 0),
        "footer-again",
        "trailer-again",
    ],
)
def test_entry_with_bytes_appended_is_corrupt(entry_path: Path, extra: bytes | str) -> None:
    meta = meta_for(BODY)
    trailer = meta.encode()
    if extra == "footer-again":
        extra = trailer[-FOOTER.size :]
    elif extra == "trailer-again":
        extra = trailer
    assert isinstance(extra, bytes)
    entry_path.write_bytes(BODY + trailer + extra)
    with pytest.raises(CorruptEntry):
        open_entry(entry_path)


def test_body_length_that_lies_is_corrupt(entry_path: Path) -> None:
    for lie in (len(BODY) - 1, len(BODY) + 1, 0):
        entry_path.write_bytes(BODY + meta_for(BODY, body_length=lie).encode())
        with pytest.raises(CorruptEntry):
            open_entry(entry_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"GIF89a",
        b"\x89PNG\r\n\x1a\n" + bytes(2000),
        os.urandom(50_000),
        b"PIXCACH1" * 3,
    ],
    ids=["empty", "tiny", "png-like", "random", "magic-only"],
)
def test_foreign_file_is_corrupt(entry_path: Path, content: bytes) -> None:
    entry_path.write_bytes(content)
    with pytest.raises(CorruptEntry):
        open_entry(entry_path)


@pytest.mark.parametrize(
    "metadata",
    [b"{garbage}", b"null", b"[1,2,3]", b"\xff" * 40, b'{"key": "x"}', b" " * 10],
)
def test_garbage_metadata_with_a_valid_footer_is_corrupt(entry_path: Path, metadata: bytes) -> None:
    entry_path.write_bytes(BODY + metadata + FOOTER.pack(MAGIC, len(metadata)))
    with pytest.raises(CorruptEntry):
        open_entry(entry_path)


def wrong_typed_metadata(body: bytes) -> bytes:
    fields = json.loads(meta_for(body).encode()[: -FOOTER.size])
    fields["body_length"] = str(len(body))  # valid JSON, wrong type
    raw = json.dumps(fields).encode()
    return body + raw + FOOTER.pack(MAGIC, len(raw))


def test_wrong_typed_metadata_is_corrupt(entry_path: Path) -> None:
    entry_path.write_bytes(wrong_typed_metadata(BODY))
    with pytest.raises(CorruptEntry):
        open_entry(entry_path)


def test_descriptor_is_closed_when_the_entry_is_corrupt(entry_path: Path) -> None:
    data = write_entry(entry_path)
    entry_path.write_bytes(data[:-1])
    before = open_fds()
    for _ in range(20):
        with pytest.raises(CorruptEntry):
            open_entry(entry_path)
    assert open_fds() == before


# -- the Store turns a corrupt entry into a miss, and removes it ----------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "cache")
    store.prepare()
    return store


async def test_store_open_returns_a_complete_entry(store: Store) -> None:
    write_entry(store.layout.entry_path("ab" * 32))
    entry = await store.open("ab" * 32)
    assert entry is not None
    try:
        assert read_body(entry) == BODY
    finally:
        os.close(entry.fd)


async def test_store_treats_a_truncated_entry_as_a_miss_and_removes_it(store: Store) -> None:
    path = store.layout.entry_path("cd" * 32)
    path.write_bytes(write_entry(path)[:-5])
    assert await store.open("cd" * 32) is None
    assert not path.exists()
    assert store.corrupt_found == 1


async def test_store_treats_wrong_typed_metadata_as_a_miss(store: Store) -> None:
    path = store.layout.entry_path("ef" * 32)
    path.write_bytes(wrong_typed_metadata(BODY))
    assert await store.open("ef" * 32) is None
    assert not path.exists()
