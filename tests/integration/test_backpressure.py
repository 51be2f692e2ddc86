"""Backpressure instead of memory growth: bounded fills with a bounded queue, and an RSS
ceiling; past them a new fill gets 503 with Retry-After while hits are still served."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.commits import settled
from tests.fake_origin import FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import MakeProxy, cache_status

FRESH = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"}


async def test_fills_past_the_bound_and_queue_get_503_with_retry_after(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    for i in range(8):
        origin.add(f"/o{i}", Obj(size=64 * 1024, seed=i, headers=FRESH, header_delay=0.5))
    proxy = await make_proxy(origin.url, max_fills="2", fill_queue="2")

    async def one(i: int) -> tuple[int, bytes, str | None]:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{proxy.url}/o{i}") as resp:
                return resp.status, await resp.read(), resp.headers.get("Retry-After")

    results = await asyncio.gather(*(one(i) for i in range(8)))
    complete = [i for i, (status, body, _) in enumerate(results) if status == 200]
    refused = [r for r in results if r[0] == 503]
    # Two in flight plus two queued are served whole; the other four are refused politely.
    assert len(complete) == 4 and len(refused) == 4
    for i in complete:
        assert results[i][1] == pattern_bytes(64 * 1024, i)
    assert all(retry_after == "1" for _, _, retry_after in refused)
    # Once the load is gone, a refused object is fetched normally.
    resp, body = await proxy.get("/o7")
    assert resp.status == 200 and body == pattern_bytes(64 * 1024, 7)


async def test_above_the_rss_ceiling_new_fills_get_503_but_hits_are_served(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    origin.add("/warm", Obj(body=b"kept", headers=FRESH))
    origin.add("/cold", Obj(body=b"new", headers=FRESH))
    roomy = await make_proxy(origin.url)
    await roomy.get("/warm")
    await settled(roomy.cache_dir, entry=True)
    resp, _ = await roomy.get("/warm")
    assert cache_status(resp).startswith("pixcache; hit")
    # A second proxy on the same cache directory, whose ceiling this process is above.
    tight = await make_proxy(origin.url, max_rss="1M", cache_dir=str(roomy.cache_dir))
    resp, body = await tight.get("/warm")
    assert resp.status == 200 and body == b"kept" and cache_status(resp).startswith("pixcache; hit")
    resp, _ = await tight.get("/cold")
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert "overloaded" in cache_status(resp)
    assert origin.hits["/cold"] == 0
