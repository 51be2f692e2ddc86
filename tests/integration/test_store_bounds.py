"""The store stays in its bounds (max_object_size, max_size, min_free) and a response that
cannot be stored is still served whole: bounds decide what is kept, never what a client gets."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.commits import settled
from tests.fake_origin import FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import MakeProxy, Proxy, cache_status

CACHEABLE = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"}
KIB = 1024
MIB = 1024 * 1024


def _params(value: str) -> list[str]:
    return [p.strip() for p in value.split(";")]


def _entries_size(proxy: Proxy) -> int:
    return sum(p.stat().st_size for p in proxy.entry_files())


def _is_hit(resp: aiohttp.ClientResponse) -> bool:
    return cache_status(resp).startswith("pixcache; hit")


async def _settled(proxy: Proxy) -> None:
    """Wait until the fills of finished responses committed or dropped their temp files.

    A client has the whole body (Content-Length bytes) a moment before the fill commits;
    eviction happens before the rename, so an empty tmp/ means it has run too."""
    await settled(proxy.cache_dir)


# -- max_object_size -----------------------------------------------------------------------


async def test_object_over_max_object_size_with_content_length_is_served_but_not_stored(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(origin.url, max_size="1M", max_object_size="300K")
    size = 400 * KIB
    origin.add("/big.jpg", Obj(size=size, seed=21, headers=CACHEABLE))
    for attempt in (1, 2):
        resp, got = await proxy.get("/big.jpg")
        assert resp.status == 200
        assert got == pattern_bytes(size, 21)
        assert resp.headers["Content-Length"] == str(size)
        params = _params(cache_status(resp))
        assert "stored" not in params
        assert 'detail="too-large"' in params
        assert params[1] == "fwd=uri-miss"
        # Not stored: every request goes to the origin.
        assert origin.hits["/big.jpg"] == attempt
        await _settled(proxy)
        assert proxy.entry_files() == []
        assert proxy.temp_files() == []


async def test_chunked_object_crossing_max_object_size_mid_stream_is_served_whole_to_every_client(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(origin.url, max_size="4M", max_object_size="300K")
    size = 900 * KIB  # no Content-Length: the limit is only found out 300 KiB in
    origin.add(
        "/stream.jpg",
        Obj(
            size=size,
            seed=22,
            headers=CACHEABLE,
            chunked=True,
            header_delay=0.3,
            chunk_interval=0.01,
        ),
    )
    body = pattern_bytes(size, 22)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:

        async def one() -> tuple[int, bytes, str]:
            async with client.get(proxy.url + "/stream.jpg") as resp:
                return resp.status, await resp.read(), cache_status(resp)

        results = await asyncio.gather(*(one() for _ in range(6)))
    for status, got, cache in results:
        assert status == 200, cache
        assert len(got) == size, cache
        assert got == body, cache
    # All six joined the one fill before the headers came (invariant 3).
    assert origin.hits["/stream.jpg"] == 1
    await _settled(proxy)
    assert proxy.entry_files() == []
    assert proxy.temp_files() == []
    # Nothing was stored: the next request goes to the origin again and is again whole.
    resp, got = await proxy.get("/stream.jpg")
    assert resp.status == 200 and got == body
    assert not _is_hit(resp)
    assert origin.hits["/stream.jpg"] == 2


async def test_object_under_max_object_size_is_stored(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(origin.url, max_size="1M", max_object_size="300K")
    size = 200 * KIB
    origin.add("/small.jpg", Obj(size=size, seed=23, headers=CACHEABLE))
    resp, got = await proxy.get("/small.jpg")
    assert resp.status == 200 and got == pattern_bytes(size, 23)
    params = _params(cache_status(resp))
    assert "stored" in params
    assert not any(p.startswith("detail=") for p in params)
    await _settled(proxy)
    assert len(proxy.entry_files()) == 1
    resp, got = await proxy.get("/small.jpg")
    assert _is_hit(resp) and got == pattern_bytes(size, 23)
    assert origin.hits["/small.jpg"] == 1


async def test_chunked_object_under_max_object_size_is_stored(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(origin.url, max_object_size="300K")
    size = 300 * KIB  # exactly at the limit: not over it
    origin.add("/edge.jpg", Obj(size=size, seed=24, headers=CACHEABLE, chunked=True))
    resp, got = await proxy.get("/edge.jpg")
    assert resp.status == 200 and got == pattern_bytes(size, 24)
    await _settled(proxy)
    assert len(proxy.entry_files()) == 1
    resp, got = await proxy.get("/edge.jpg")
    assert _is_hit(resp) and got == pattern_bytes(size, 24)
    assert origin.hits["/edge.jpg"] == 1


# -- max_size ------------------------------------------------------------------------------


async def test_max_size_bounds_the_entries_after_every_commit(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(origin.url, max_size="1M")
    size = 100 * KIB
    for i in range(30):
        origin.add(f"/cold{i}.jpg", Obj(size=size, seed=100 + i, headers=CACHEABLE))
    entry_size = 0
    for i in range(30):
        resp, got = await proxy.get(f"/cold{i}.jpg")
        assert resp.status == 200 and got == pattern_bytes(size, 100 + i)
        assert "stored" in _params(cache_status(resp))
        await _settled(proxy)
        sizes = [p.stat().st_size for p in proxy.entry_files()]
        entry_size = max([entry_size, *sizes])
        total = _entries_size(proxy)
        assert total <= MIB + entry_size, f"after /cold{i}.jpg: {total} bytes of entries"
    # Eviction really happened, of the oldest entries: the first is gone, the last is a hit.
    assert len(proxy.entry_files()) < 30
    resp, got = await proxy.get("/cold0.jpg")
    assert not _is_hit(resp) and got == pattern_bytes(size, 100)
    assert origin.hits["/cold0.jpg"] == 2
    resp, got = await proxy.get("/cold29.jpg")
    assert _is_hit(resp) and got == pattern_bytes(size, 129)
    assert origin.hits["/cold29.jpg"] == 1


async def test_max_size_is_never_exceeded_by_the_entry_being_committed(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """Room is made for the whole entry file (body + metadata + footer), not the body."""
    proxy = await make_proxy(origin.url, max_size="1M")
    for i in range(9):
        origin.add(f"/tight{i}.jpg", Obj(size=100 * KIB, seed=200 + i, headers=CACHEABLE))
        resp, got = await proxy.get(f"/tight{i}.jpg")
        assert got == pattern_bytes(100 * KIB, 200 + i)
        await _settled(proxy)
    # A body that exactly fills what is left: the entry (body + metadata) does not fit,
    # so committing it must evict.
    size = MIB - _entries_size(proxy)
    origin.add("/last.jpg", Obj(size=size, seed=299, headers=CACHEABLE))
    resp, got = await proxy.get("/last.jpg")
    assert resp.status == 200 and got == pattern_bytes(size, 299)
    await _settled(proxy)
    total = _entries_size(proxy)
    assert total <= MIB, f"{total} bytes of entries, {total - MIB} over max_size"


async def test_hot_set_stays_cached_while_cold_objects_pass_through(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(origin.url, max_size="1M")
    size = 100 * KIB
    hot = [f"/hot{i}.jpg" for i in range(3)]
    for i, path in enumerate(hot):
        origin.add(path, Obj(size=size, seed=300 + i, headers=CACHEABLE))
    for i in range(30):
        origin.add(f"/cold{i}.jpg", Obj(size=size, seed=400 + i, headers=CACHEABLE))

    for i, path in enumerate(hot):  # first sight: misses that store
        resp, got = await proxy.get(path)
        assert "stored" in _params(cache_status(resp)) and got == pattern_bytes(size, 300 + i)
        await _settled(proxy)
    entry_size = max(p.stat().st_size for p in proxy.entry_files())
    for n in range(30):
        for i, path in enumerate(hot):
            resp, got = await proxy.get(path)
            assert resp.status == 200 and got == pattern_bytes(size, 300 + i)
            assert _is_hit(resp), f"{path} before /cold{n}.jpg: {cache_status(resp)}"
        await proxy.store.flush_uses()  # the hits' LRU uses, as upkeep writes them each second
        resp, got = await proxy.get(f"/cold{n}.jpg")
        assert resp.status == 200 and got == pattern_bytes(size, 400 + n)
        await _settled(proxy)
        assert _entries_size(proxy) <= MIB + entry_size
    for path in hot:
        assert origin.hits[path] == 1, path
    # The cold objects were the ones evicted.
    assert origin.hits["/cold0.jpg"] == 1
    resp, _ = await proxy.get("/cold0.jpg")
    assert not _is_hit(resp) and origin.hits["/cold0.jpg"] == 2


# -- min_free ------------------------------------------------------------------------------


async def test_nothing_is_stored_while_free_space_is_under_min_free(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(origin.url, min_free="100000T")
    size = 256 * KIB
    origin.add("/a.jpg", Obj(size=size, seed=31, headers=CACHEABLE))
    origin.add("/b.jpg", Obj(size=size, seed=32, headers=CACHEABLE, chunked=True, header_delay=0.2))
    for attempt in (1, 2):
        resp, got = await proxy.get("/a.jpg")
        assert resp.status == 200 and got == pattern_bytes(size, 31)
        params = _params(cache_status(resp))
        assert "stored" not in params and 'detail="disk-low"' in params
        assert origin.hits["/a.jpg"] == attempt

    async with aiohttp.ClientSession() as client:

        async def one() -> tuple[int, bytes, str]:
            async with client.get(proxy.url + "/b.jpg") as resp:
                return resp.status, await resp.read(), cache_status(resp)

        results = await asyncio.gather(*(one() for _ in range(4)))
    for status, got, cache in results:
        assert status == 200 and got == pattern_bytes(size, 32), cache
        assert "stored" not in _params(cache) and 'detail="disk-low"' in _params(cache)
    await _settled(proxy)
    assert proxy.entry_files() == []
    assert proxy.temp_files() == []
