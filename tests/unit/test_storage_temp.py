"""TempBody: a body streamed into a temp file, hashed as it goes, committed or discarded."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from storage.commit import CommitRefused
from storage.entry import EntryMeta
from storage.layout import Layout
from storage.lookup import open_entry
from storage.temp import TempBody

CHUNKS = [b"\x89PNG\r\n\x1a\n", b"", os.urandom(70_000), b"x" * 3, os.urandom(1)]


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "cache")
    layout.create()
    return layout


def meta_for(temp: TempBody, key: str = "/a.png") -> EntryMeta:
    return EntryMeta(
        key=key,
        status=200,
        headers=[("Content-Type", "image/png")],
        request_time=1.0,
        response_time=2.0,
        body_length=temp.written,
        sha256=temp.sha256,
    )


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
    final = layout.entry_path("ab" * 32)
    await temp.commit(meta, final)
    assert not temp.path.exists()
    assert list(layout.tmp.iterdir()) == []
    entry = open_entry(final)
    assert entry is not None
    try:
        assert entry.meta == meta
        assert entry.meta.sha256 == hashlib.sha256(b"".join(CHUNKS)).hexdigest()
        assert os.pread(entry.fd, entry.meta.body_length, 0) == b"".join(CHUNKS)
    finally:
        os.close(entry.fd)
    # discard after a commit must not remove the committed entry
    temp.discard()
    assert final.exists()


async def test_a_reader_keeps_its_bytes_across_the_commit(layout: Layout) -> None:
    temp = TempBody.create(layout.tmp)
    await temp.append(b"streamed body")
    fd = temp.dup_fd()
    try:
        await temp.commit(meta_for(temp), layout.entry_path("cd" * 32))
        assert os.pread(fd, 13, 0) == b"streamed body"
    finally:
        os.close(fd)


async def test_commit_refuses_when_the_file_grew_behind_its_back(layout: Layout) -> None:
    """A second writer appended to the temp file, past where the trailer will end: the
    size check refuses the commit."""
    temp = TempBody.create(layout.tmp)
    await temp.append(b"body")
    meta = meta_for(temp)
    intruder = os.open(temp.path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(intruder, b"x" * (len(meta.encode()) + 100))
    finally:
        os.close(intruder)
    final = layout.entry_path("ef" * 32)
    with pytest.raises(CommitRefused):
        await temp.commit(meta, final)
    assert not final.exists()
    temp.discard()
    assert not temp.path.exists()
