"""Hits a worker answers from what its earlier hit prepared (proxy/hot.py) are the same
response as the full path's, and stop the moment the entry on disk changes: a purge, a
replacement, staleness, a truncated or rewritten body file all take effect for the very
next request."""

from __future__ import annotations

import os
from email.utils import formatdate
from pathlib import Path

import pytest
from multidict import CIMultiDict

from proxy.hot import HOT_KEY
from storage.layout import primary_key_hash
from tests.clock import FakeClock
from tests.commits import settled
from tests.fake_origin import FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import MakeProxy, Proxy, cache_status

HEADERS = {
    "Cache-Control": "max-age=600",
    "Content-Type": "application/octet-stream",
    "ETag": '"v1"',
}
# Fields whose values change from one request to the next.
PER_REQUEST = ("Age", "Cache-Status")


def body_file(proxy: Proxy) -> Path:
    [path] = [p for p in (proxy.cache_dir / "bodies").glob("??/*") if p.is_file()]
    return path


async def hits(proxy: Proxy, path: str, count: int) -> list[tuple[int, CIMultiDict[str], bytes]]:
    out = []
    for _ in range(count):
        resp, body = await proxy.get(path)
        out.append((resp.status, CIMultiDict(resp.headers), body))
    return out


def fields_without_per_request(headers: CIMultiDict[str]) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers.items() if k not in PER_REQUEST)


async def stored(proxy: Proxy, path: str) -> None:
    resp, _ = await proxy.get(path)
    assert "stored" in cache_status(resp)
    await settled(proxy.cache_dir, entry=True)


@pytest.mark.parametrize(
    ("size", "settings"),
    [
        (1024, {}),
        (200 * 1024, {}),
        (600 * 1024, {}),
        (300 * 1024, {"verify_on_hit_max_size": "0"}),
    ],
    ids=["1KiB", "200KiB", "sealed-600KiB", "body-file"],
)
async def test_later_hits_are_the_full_paths_response(
    origin: FakeOrigin, make_proxy: MakeProxy, size: int, settings: dict[str, str]
) -> None:
    body = pattern_bytes(size, seed=size)
    # One Date for both proxies' fetches: the origin's own Date would differ between them
    # whenever the two fetches straddle a second.
    origin.add("/a.jpg", Obj(body=body, headers={**HEADERS, "Date": formatdate(usegmt=True)}))
    cold = await make_proxy(origin.url, hot_cache_size="0", **settings)
    hot = await make_proxy(origin.url, **settings)
    for proxy in (cold, hot):
        await stored(proxy, "/a.jpg")
    full_path = await hits(cold, "/a.jpg", 3)
    prepared = await hits(hot, "/a.jpg", 3)
    assert hot.app is not None and len(hot.app[HOT_KEY]) == 1  # prepared by the first hit
    for status, headers, got in full_path + prepared:
        assert status == 200 and got == body
        assert headers["Age"].isdigit()
        assert cache_status_ttl(headers) > 590
    reference = fields_without_per_request(full_path[0][1])
    for _, headers, _ in prepared:
        assert fields_without_per_request(headers) == reference
    assert origin.hits["/a.jpg"] == 2  # once per proxy


def cache_status_ttl(headers: CIMultiDict[str]) -> int:
    params = headers["Cache-Status"].split("; ")
    assert params[:2] == ["pixcache", "hit"]
    [ttl] = [p for p in params if p.startswith("ttl=")]
    return int(ttl.removeprefix("ttl="))


async def test_a_purge_counts_from_the_next_request(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    origin.add("/p.jpg", Obj(body=b"first", headers=HEADERS))
    proxy = await make_proxy(origin.url)
    await stored(proxy, "/p.jpg")
    await hits(proxy, "/p.jpg", 2)
    origin.add("/p.jpg", Obj(body=b"second", headers=HEADERS))
    assert await proxy.store.purge([primary_key_hash("/p.jpg")]) == 1
    resp, got = await proxy.get("/p.jpg")
    assert got == b"second" and cache_status(resp).startswith("pixcache; fwd=uri-miss")


async def test_a_replaced_entry_counts_from_the_next_request(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    origin.add("/r.jpg", Obj(body=b"first", headers=HEADERS))
    proxy = await make_proxy(origin.url)
    await stored(proxy, "/r.jpg")
    await hits(proxy, "/r.jpg", 2)
    origin.add("/r.jpg", Obj(body=b"second", headers={**HEADERS, "ETag": '"v2"'}))
    # A client that asks the cache to validate replaces the entry (RFC 9111 §5.2.1.4).
    resp, got = await proxy.get("/r.jpg", headers={"Cache-Control": "no-cache"})
    assert got == b"second"
    await settled(proxy.cache_dir, entry=True)
    for status, _, got in await hits(proxy, "/r.jpg", 2):
        assert (status, got) == (200, b"second")


async def test_a_stale_entry_goes_to_the_policy(
    origin: FakeOrigin, make_proxy: MakeProxy, clock: FakeClock
) -> None:
    # Long enough that the hits below are fresh even on a loaded machine.
    origin.add("/s.jpg", Obj(body=b"short", headers={**HEADERS, "Cache-Control": "max-age=4"}))
    proxy = await make_proxy(origin.url)
    await stored(proxy, "/s.jpg")
    await hits(proxy, "/s.jpg", 2)
    clock.advance(4.5)
    resp, got = await proxy.get("/s.jpg")
    assert got == b"short" and "fwd=stale" in cache_status(resp)
    assert origin.hits["/s.jpg"] == 2  # revalidated


@pytest.mark.parametrize("damage", ["truncated", "rewritten", "removed"])
async def test_a_body_file_changed_on_disk_is_not_trusted(
    origin: FakeOrigin, make_proxy: MakeProxy, damage: str
) -> None:
    body = pattern_bytes(4096, seed=9)
    origin.add("/d.jpg", Obj(body=body, headers=HEADERS))
    proxy = await make_proxy(origin.url, scrub_rate="0")
    await stored(proxy, "/d.jpg")
    await hits(proxy, "/d.jpg", 2)
    path = body_file(proxy)
    if damage == "truncated":
        os.truncate(path, 100)
    elif damage == "rewritten":
        path.write_bytes(b"x" * len(body))
    else:
        path.unlink()
    resp, got = await proxy.get("/d.jpg")
    assert got == body
    assert "hit" not in cache_status(resp).split("; ")  # the entry was found corrupt
    assert origin.hits["/d.jpg"] == 2


async def test_requests_the_stored_response_does_not_answer_unchanged_take_the_full_path(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    body = pattern_bytes(2048, seed=3)
    origin.add("/f.jpg", Obj(body=body, headers=HEADERS))
    proxy = await make_proxy(origin.url)
    await stored(proxy, "/f.jpg")
    await hits(proxy, "/f.jpg", 2)
    resp, got = await proxy.get("/f.jpg", headers={"Range": "bytes=0-9"})
    assert resp.status == 206 and got == body[:10]
    resp, got = await proxy.get("/f.jpg", headers={"If-None-Match": '"v1"'})
    assert resp.status == 304 and got == b""
    async with proxy.client.head(proxy.url + "/f.jpg") as head:
        assert head.status == 200 and head.headers["Content-Length"] == "2048"
        assert await head.read() == b""
    resp, got = await proxy.get("/f.jpg", headers={"Connection": "close"})
    assert resp.status == 200 and got == body
    assert origin.hits["/f.jpg"] == 1
