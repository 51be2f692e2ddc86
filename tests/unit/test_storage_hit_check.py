"""The hit's checksum check: open_entry reads a body of at most `check_max` bytes whole and
hands back the bytes it checked; a body whose bytes no longer match its SHA-256 is corrupt,
and Store.open removes it (head and body) and reports a miss."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.entry import CorruptEntry
from storage.fileid import FileId
from storage.layout import Layout, primary_key_hash
from storage.lookup import OpenEntry, open_entry
from storage.store import CHECK_ON_HIT_MAX, Store
from tests.entries import body_of, commit

BODY = os.urandom(50 * 1024)


def flip_bit(path: Path, at: int) -> None:
    with path.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x01]))


def opened(head: Path, check_max: int) -> OpenEntry:
    entry = open_entry(head, check_max)
    assert entry is not None
    return entry


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "cache")
    layout.create()
    return layout


def committed(layout: Layout, body: bytes = BODY) -> Path:
    return asyncio.run(commit(layout, body))


@pytest.mark.parametrize("check_max", [len(BODY), len(BODY) + 1, CHECK_ON_HIT_MAX])
def test_a_body_within_the_limit_comes_with_its_checked_bytes(
    layout: Layout, check_max: int
) -> None:
    entry = opened(committed(layout), check_max)
    try:
        assert entry.checked == BODY
        assert entry.source == BODY  # what a hit sends
    finally:
        os.close(entry.fd)


@pytest.mark.parametrize("check_max", [0, len(BODY) - 1])
def test_a_body_over_the_limit_is_sent_from_its_file(layout: Layout, check_max: int) -> None:
    entry = opened(committed(layout), check_max)
    try:
        assert entry.checked is None
        assert entry.source == entry.fd
        assert os.pread(entry.fd, len(BODY) + 1, 0) == BODY
    finally:
        os.close(entry.fd)


def test_an_empty_body_needs_no_read(layout: Layout) -> None:
    entry = opened(committed(layout, b""), CHECK_ON_HIT_MAX)
    try:
        assert entry.checked is None and entry.meta.body_length == 0
    finally:
        os.close(entry.fd)


@pytest.mark.parametrize("at", [0, len(BODY) // 2, len(BODY) - 1])
def test_a_flipped_bit_is_corrupt_and_names_the_head(layout: Layout, at: int) -> None:
    head = committed(layout)
    flip_bit(body_of(head), at)
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(CorruptEntry) as caught:
        open_entry(head, len(BODY))
    assert "checksum mismatch" in str(caught.value)
    assert caught.value.file_id == FileId.of(os.stat(head))  # only this head is removed
    assert len(os.listdir("/proc/self/fd")) == fds_before  # the body's descriptor is closed


def test_without_the_check_a_flipped_bit_passes_the_size_check(layout: Layout) -> None:
    """What the limit trades: above it, only the size is checked (the scrubber and
    `pixcache verify` check the bytes)."""
    head = committed(layout)
    flip_bit(body_of(head), 100)
    entry = opened(head, len(BODY) - 1)
    try:
        assert entry.checked is None
        assert os.pread(entry.fd, len(BODY), 0) != BODY
    finally:
        os.close(entry.fd)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "cache")
    store.prepare()
    yield store
    store.close()


async def test_store_open_removes_a_rotten_entry_and_reports_a_miss(store: Store) -> None:
    assert store.check_on_hit_max == CHECK_ON_HIT_MAX  # on unless configured off
    head = await commit(store.layout, BODY)
    body = body_of(head)
    flip_bit(body, 1234)
    assert await store.open(primary_key_hash("/a.png")) is None
    assert store.corrupt_found == 1
    assert not head.exists() and not body.exists()
