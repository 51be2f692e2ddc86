"""The hit's checksum check: open_entry reads a body of at most `check_max` bytes whole and
hands back the bytes it checked; a body whose bytes no longer match its CRC-32 (or, in a head
written before heads had one, its SHA-256) is corrupt, and Store.open removes it (head and
body) and reports a miss."""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from storage.entry import CorruptEntry
from storage.fileid import FileId
from storage.layout import Layout, primary_key_hash
from storage.lookup import OpenEntry, open_entry, read_head
from storage.store import CHECK_ON_HIT_MAX, Store
from storage.temp import TempBody
from storage.verify import Problem, verify_entry
from tests.commits import descriptors_into
from tests.entries import body_of, meta_for

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


# Heads carry a CRC-32 since the hit check; older heads have only the SHA-256.
SUMS = ["crc32", "sha256 only"]


def committed(layout: Layout, body: bytes = BODY, sums: str = "crc32") -> Path:
    """A committed entry as a fill writes it, with or without a CRC-32 in its head."""

    async def write() -> Path:
        temp = TempBody.create(layout.tmp)
        try:
            await temp.append(body)
            crc32 = temp.crc32 if sums == "crc32" else None
            head = layout.entry_path(primary_key_hash("/a.png"))
            await temp.commit(replace(meta_for(temp), crc32=crc32), head)
            return head
        finally:
            temp.discard()

    return asyncio.run(write())


@pytest.mark.parametrize("sums", SUMS)
@pytest.mark.parametrize("check_max", [len(BODY), len(BODY) + 1, CHECK_ON_HIT_MAX])
def test_a_body_within_the_limit_comes_with_its_checked_bytes(
    layout: Layout, check_max: int, sums: str
) -> None:
    entry = opened(committed(layout, sums=sums), check_max)
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


@pytest.mark.parametrize("sums", SUMS)
@pytest.mark.parametrize("at", [0, len(BODY) // 2, len(BODY) - 1])
def test_a_flipped_bit_is_corrupt_and_names_the_head(layout: Layout, at: int, sums: str) -> None:
    head = committed(layout, sums=sums)
    flip_bit(body_of(head), at)
    fds_before = descriptors_into(layout.root)
    with pytest.raises(CorruptEntry) as caught:
        open_entry(head, len(BODY))
    assert "checksum mismatch" in str(caught.value)
    assert caught.value.file_id == FileId.of(os.stat(head))  # only this head is removed
    assert descriptors_into(layout.root) == fds_before  # the body's descriptor is closed


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


async def store_commit(store: Store, key_hash: str, body: bytes) -> Path:
    temp = store.begin()
    try:
        await temp.append(body)
        await store.commit(temp, meta_for(temp), key_hash)
    finally:
        temp.discard()
    return store.layout.entry_path(key_hash)


async def test_the_store_records_the_crc32_of_what_it_commits(store: Store) -> None:
    head = await store_commit(store, "cd" * 32, BODY)
    found = read_head(head)
    assert found is not None
    assert found[0].crc32 == zlib.crc32(BODY)


async def test_store_open_removes_a_rotten_entry_and_reports_a_miss(store: Store) -> None:
    assert store.check_on_hit_max == CHECK_ON_HIT_MAX  # on unless configured off
    key_hash = "cd" * 32
    head = await store_commit(store, key_hash, BODY)
    body = body_of(head)
    flip_bit(body, 1234)
    assert await store.open(key_hash) is None
    assert store.corrupt_found == 1
    assert not head.exists() and not body.exists()


def test_verify_refuses_what_a_hit_would_refuse(layout: Layout) -> None:
    """A head whose CRC-32 does not match its body (its SHA-256 does) is corrupt for
    `pixcache verify` and the scrubber as well as for a hit."""
    head = committed(layout)
    found = read_head(head)
    assert found is not None
    wrong = replace(found[0], crc32=(zlib.crc32(BODY) + 1) % (1 << 32))
    head.write_bytes(wrong.encode())
    with pytest.raises(CorruptEntry):
        open_entry(head, len(BODY))
    check = verify_entry(head)
    assert check.problem is Problem.CHECKSUM_MISMATCH
