"""Invariant 3: one origin fetch per key, with every waiter streaming the bytes as they
arrive; a failed fill fails its waiters and stores nothing."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.fake_origin import FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import Proxy, cache_status

CACHEABLE = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"}


async def test_200_concurrent_cold_requests_make_one_origin_request(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    body = pattern_bytes(300_000, seed=3)
    origin.add("/hot.png", Obj(body=body, headers=CACHEABLE, header_delay=0.5))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one() -> tuple[int, bytes, str]:
            async with client.get(proxy.url + "/hot.png") as resp:
                return resp.status, await resp.read(), resp.headers["Cache-Status"]

        results = await asyncio.gather(*(one() for _ in range(200)))
    assert origin.hits["/hot.png"] == 1
    assert all(status == 200 and got == body for status, got, _ in results)
    # One request started the fill; the rest joined it, or came after it and hit.
    leaders = [cs for _, _, cs in results if "collapsed" not in cs and "hit" not in cs.split("; ")]
    assert len(leaders) == 1


async def test_waiters_receive_bytes_while_the_fill_is_still_running(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    body = pattern_bytes(200_000, seed=5)
    origin.add("/slow.png", Obj(body=body, headers=CACHEABLE, mode="pause", pause_seconds=3))
    half = len(body) // 2
    async with aiohttp.ClientSession() as a, aiohttp.ClientSession() as b:
        first = await a.get(proxy.url + "/slow.png")
        second = await b.get(proxy.url + "/slow.png")
        # Both get the first half while the origin is still paused in the middle.
        got_a = await asyncio.wait_for(first.content.readexactly(half), 2.5)
        got_b = await asyncio.wait_for(second.content.readexactly(half), 2.5)
        assert got_a == got_b == body[:half]
        assert "collapsed" in second.headers["Cache-Status"]
        assert got_a + await first.read() == body
        assert got_b + await second.read() == body
        first.release()
        second.release()
    assert origin.hits["/slow.png"] == 1


async def test_fill_survives_the_disconnect_of_the_client_that_started_it(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    body = pattern_bytes(100_000, seed=7)
    origin.add("/leave.png", Obj(body=body, headers=CACHEABLE, mode="pause", pause_seconds=1))
    async with aiohttp.ClientSession() as quitter:
        resp = await quitter.get(proxy.url + "/leave.png")
        await resp.content.readexactly(10)
        resp.close()  # the client that started the fill goes away mid-body
    await proxy.fills_ended()
    resp, got = await proxy.get("/leave.png")
    assert got == body
    assert cache_status(resp).startswith("pixcache; hit")
    assert origin.hits["/leave.png"] == 1


@pytest.mark.parametrize("mode", ["short", "chunked_truncated", "reset"])
async def test_broken_body_fails_every_waiter_and_stores_nothing(
    origin: FakeOrigin, proxy: Proxy, mode: str
) -> None:
    body = pattern_bytes(100_000, seed=9)
    origin.add("/broken.png", Obj(body=body, headers=CACHEABLE, mode=mode, header_delay=0.3))

    async def one() -> bytes:
        async with aiohttp.ClientSession() as client:
            async with client.get(proxy.url + "/broken.png") as resp:
                assert resp.status == 200  # the headers were sent before the body broke
                return await resp.read()

    results = await asyncio.gather(*(one() for _ in range(5)), return_exceptions=True)
    # Each client can tell its response is incomplete: it never looks complete.
    assert all(
        isinstance(r, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError) for r in results
    ), results
    assert origin.hits["/broken.png"] == 1
    await proxy.fills_ended()
    assert proxy.entry_files() == []
    assert proxy.temp_files() == []
    # The next request goes to the origin again.
    origin.add("/broken.png", Obj(body=body, headers=CACHEABLE))
    resp, got = await proxy.get("/broken.png")
    assert got == body and cache_status(resp).startswith("pixcache; fwd=uri-miss")
    assert origin.hits["/broken.png"] == 2


async def test_short_body_gives_an_aborted_response_then_refetches(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    body = pattern_bytes(64_000, seed=11)
    origin.add("/half.png", Obj(body=body, headers=CACHEABLE, mode="short"))
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url + "/half.png") as resp:
            assert resp.headers["Content-Length"] == str(len(body))
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert proxy.entry_files() == []
    with pytest.raises(aiohttp.ClientPayloadError):  # not stored: the origin is asked again
        await proxy.get("/half.png")
    assert origin.hits["/half.png"] == 2


async def test_unshareable_responses_are_fetched_for_each_client(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    origin.add(
        "/mine", Obj(body=b"per-user", headers={"Cache-Control": "private"}, header_delay=0.3)
    )
    async with aiohttp.ClientSession() as client:

        async def one() -> bytes:
            async with client.get(proxy.url + "/mine") as resp:
                return await resp.read()

        results = await asyncio.gather(*(one() for _ in range(5)))
    assert results == [b"per-user"] * 5
    assert origin.hits["/mine"] == 5
