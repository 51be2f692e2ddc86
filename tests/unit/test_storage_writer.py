"""Store.writer: a fill's temp file never outlives the `async with`, whichever way it is left."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from storage import CommitRefused, EntryMeta, Store, Writer, primary_key_hash

KEY = "/photo.jpg"
BODY = b"\xff\xd8" + os.urandom(70_000)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "cache")
    store.prepare()
    yield store
    store.close()


def temp_files(store: Store) -> list[Path]:
    return sorted(store.layout.tmp.iterdir())


def meta_of(writer: Writer) -> EntryMeta:
    return EntryMeta(
        key=KEY,
        status=200,
        headers=[("Content-Type", "image/jpeg")],
        request_time=1.0,
        response_time=2.0,
        body_length=writer.written,
        sha256=writer.sha256,
    )


async def stored_body(store: Store) -> bytes | None:
    entry = await store.open(primary_key_hash(KEY))
    if entry is None:
        return None
    try:
        return os.pread(entry.fd, entry.meta.body_length, 0)
    finally:
        os.close(entry.fd)


async def test_a_committed_body_is_the_entry_and_no_temp_file_is_left(store: Store) -> None:
    async with store.writer(KEY) as writer:
        writer.open()
        for at in range(0, len(BODY), 16_384):
            await writer.append(BODY[at : at + 16_384])
        assert len(temp_files(store)) == 1
        await writer.commit(meta_of(writer))
        assert not writer.storing
    assert temp_files(store) == []
    assert await stored_body(store) == BODY


async def test_leaving_without_a_commit_removes_the_temp_file(store: Store) -> None:
    async with store.writer(KEY) as writer:
        writer.open()
        await writer.append(BODY)
        assert writer.storing and len(temp_files(store)) == 1
    assert temp_files(store) == []
    assert await stored_body(store) is None


async def test_an_error_inside_removes_the_temp_file_and_goes_on(store: Store) -> None:
    with pytest.raises(ConnectionResetError):
        async with store.writer(KEY) as writer:
            writer.open()
            await writer.append(BODY[:1000])
            raise ConnectionResetError("origin went away")
    assert temp_files(store) == []


async def test_a_cancelled_fill_leaves_no_temp_file(store: Store) -> None:
    appended = asyncio.Event()

    async def fill() -> None:
        async with store.writer(KEY) as writer:
            writer.open()
            await writer.append(BODY[:1000])
            appended.set()
            await asyncio.Event().wait()  # waits for origin bytes that never come

    task = asyncio.create_task(fill())
    await asyncio.wait_for(appended.wait(), 30)
    assert len(temp_files(store)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert temp_files(store) == []


async def test_a_refused_commit_leaves_no_temp_file_and_no_entry(store: Store) -> None:
    with pytest.raises(CommitRefused):
        async with store.writer(KEY) as writer:
            writer.open()
            await writer.append(BODY)
            # Metadata that does not describe the bytes written is never committed.
            await writer.commit(replace(meta_of(writer), body_length=len(BODY) + 1))
    assert temp_files(store) == []
    assert await stored_body(store) is None


async def test_readers_keep_reading_a_body_the_writer_discarded(store: Store) -> None:
    """A fill that stops storing discards its temp file; its readers read on from theirs."""
    async with store.writer(KEY) as writer:
        writer.open()
        await writer.append(BODY)
        reader = writer.dup_fd()
        writer.discard()
        assert not writer.storing and temp_files(store) == []
    try:
        assert os.pread(reader, len(BODY) + 1, 0) == BODY
    finally:
        os.close(reader)
