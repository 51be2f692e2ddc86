"""Store.lookup follows a URL's Vary marker to the variant a request selects (RFC 9111 §4.1),
and a commit writes the marker itself: the proxy never sees markers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from proxy.policy.vary import RequestVary, vary_values
from storage import EntryMeta, Found, Store, primary_key_hash

KEY = "/photo.jpg"
PRIMARY = primary_key_hash(KEY)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "cache")
    store.prepare()
    yield store
    store.close()


def request(**fields: str) -> RequestVary:
    return RequestVary(CIMultiDict((name.replace("_", "-"), v) for name, v in fields.items()))


async def store_response(
    store: Store, body: bytes, vary: tuple[str, ...] = (), asked: RequestVary | None = None
) -> None:
    """Commit a response to KEY as a fill does, varying on `vary` for the request `asked`."""
    headers = asked.request_headers if asked is not None else CIMultiDict[str]()
    async with store.writer(KEY) as writer:
        writer.open()
        await writer.append(body)
        meta = EntryMeta(
            key=KEY,
            status=200,
            headers=[("Content-Type", "image/jpeg"), *(("Vary", f) for f in vary)],
            request_time=1.0,
            response_time=2.0,
            body_length=writer.written,
            sha256=writer.sha256,
            vary_fields=vary,
            vary_values=vary_values(vary, headers),
        )
        await writer.commit(meta)


async def body_found(store: Store, asked: RequestVary) -> bytes | str:
    """The body the lookup finds for `asked`, else why it missed."""
    found = await store.lookup(PRIMARY, asked)
    if found.entry is None:
        return found.miss
    try:
        return os.pread(found.entry.fd, found.entry.meta.body_length, 0)
    finally:
        os.close(found.entry.fd)


async def test_a_url_never_stored_is_a_uri_miss_under_its_primary_key(store: Store) -> None:
    assert await store.lookup(PRIMARY, request()) == Found(None, PRIMARY, "uri-miss")


async def test_a_response_that_does_not_vary_is_found_under_the_primary_key(store: Store) -> None:
    await store_response(store, b"plain")
    found = await store.lookup(PRIMARY, request(accept="image/webp"))
    assert found.entry is not None and (found.key_hash, found.miss) == (PRIMARY, "")
    os.close(found.entry.fd)
    assert await body_found(store, request()) == b"plain"


async def test_each_request_finds_the_variant_its_fields_select(store: Store) -> None:
    webp, avif = request(accept="image/webp"), request(accept="image/avif")
    await store_response(store, b"webp", ("accept",), webp)
    await store_response(store, b"avif", ("accept",), avif)
    assert await body_found(store, webp) == b"webp"
    assert await body_found(store, avif) == b"avif"
    assert await body_found(store, request(accept="image/png")) == "vary-miss"
    assert await body_found(store, request()) == "vary-miss"


async def test_a_vary_miss_names_the_key_the_variant_is_then_stored_under(store: Store) -> None:
    await store_response(store, b"webp", ("accept",), request(accept="image/webp"))
    png = request(accept="image/png")
    missed = await store.lookup(PRIMARY, png)
    assert (missed.entry, missed.miss) == (None, "vary-miss")
    assert missed.key_hash != PRIMARY
    await store_response(store, b"png", ("accept",), png)
    found = await store.lookup(PRIMARY, png)
    assert found.entry is not None and found.key_hash == missed.key_hash
    os.close(found.entry.fd)


async def test_fills_that_both_missed_keep_both_variants(store: Store) -> None:
    """Two fills looked the URL up before either committed: the second commit finds the
    marker the first wrote and stores its variant beside the first one's."""
    webp, avif = request(accept="image/webp"), request(accept="image/avif")
    assert (await store.lookup(PRIMARY, webp)).miss == "uri-miss"
    assert (await store.lookup(PRIMARY, avif)).miss == "uri-miss"
    await store_response(store, b"webp", ("accept",), webp)
    await store_response(store, b"avif", ("accept",), avif)
    assert await body_found(store, webp) == b"webp"
    assert await body_found(store, avif) == b"avif"


async def test_a_response_varying_on_other_fields_retires_the_old_variants(store: Store) -> None:
    webp = request(accept="image/webp", accept_language="en")
    await store_response(store, b"by type", ("accept",), webp)
    await store_response(store, b"by language", ("accept-language",), webp)
    assert await body_found(store, webp) == b"by language"
    # The variant stored by type is no longer selected, whatever the request.
    assert await body_found(store, request(accept="image/webp")) == "vary-miss"


async def test_a_response_that_stops_varying_replaces_the_marker(store: Store) -> None:
    await store_response(store, b"webp", ("accept",), request(accept="image/webp"))
    await store_response(store, b"for all")
    assert await body_found(store, request(accept="image/webp")) == b"for all"
    assert await body_found(store, request()) == b"for all"


async def test_a_corrupt_variant_is_removed_and_is_a_vary_miss(store: Store) -> None:
    webp = request(accept="image/webp")
    await store_response(store, b"webp", ("accept",), webp)
    variant = (await store.lookup(PRIMARY, request(accept="image/png"))).key_hash
    await store_response(store, b"png!", ("accept",), request(accept="image/png"))
    head = store.layout.entry_path(variant)
    head.write_bytes(head.read_bytes()[:-3])
    assert await body_found(store, request(accept="image/png")) == "vary-miss"
    assert not head.exists()
    assert store.corrupt_found == 1
    assert await body_found(store, webp) == b"webp"  # its neighbour under the marker stays


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(2)
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


async def test_a_lookup_through_a_marker_is_one_thread_call(store: Store) -> None:
    webp = request(accept="image/webp")
    await store_response(store, b"webp", ("accept",), webp)
    counting = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(counting)
    assert await body_found(store, webp) == b"webp"
    assert await body_found(store, request(accept="image/png")) == "vary-miss"
    assert counting.calls == 2
