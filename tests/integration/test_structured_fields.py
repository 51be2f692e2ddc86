"""Structured Fields through pixcache, on real sockets: Cache-Status (RFC 9211), which
pixcache appends to upstream's, and targeted cache-control fields (RFC 9213), which are
obeyed only when they are valid Dictionaries."""

from __future__ import annotations

import http_sf
import pytest

from proxy.hot import HOT_KEY
from tests.commits import settled
from tests.fake_origin import FakeOrigin, Obj
from tests.integration.conftest import MakeProxy, Proxy, cache_status

CACHEABLE = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"}


def members(value: str) -> list[str]:
    """The names of the caches in a Cache-Status value, in order (a valid List)."""
    return [str(name) for name, _ in http_sf.parse(value.encode(), tltype="list")]


# -- Cache-Status (RFC 9211) ----------------------------------------------------------------


async def test_cache_status_appends_ours_after_upstreams_on_miss_hit_and_hot_hit(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """RFC 9211 §2: the cache closest to the client appends its member last. The stored
    upstream Cache-Status is served again with each hit's own member, on the full path and
    on the prepared (hot) path alike."""
    origin.add("/up.jpg", Obj(body=b"up", headers={**CACHEABLE, "Cache-Status": "upstream; hit"}))
    proxy = await make_proxy(origin.url)
    resp, _ = await proxy.get("/up.jpg")
    upstream, ours = cache_status(resp).split(", ")
    assert upstream == "upstream; hit"
    assert ours.startswith("pixcache; fwd=uri-miss; fwd-status=200; ")
    assert "stored" in ours.split("; ")
    await settled(proxy.cache_dir, entry=True)
    seen = []
    for _ in range(3):
        resp, body = await proxy.get("/up.jpg")
        assert body == b"up"
        seen.append(cache_status(resp))
    assert proxy.app is not None and len(proxy.app[HOT_KEY]) == 1  # the last hits were hot
    for value in seen:
        head, _, ttl = value.rpartition("; ttl=")
        assert head == "upstream; hit, pixcache; hit" and 590 < int(ttl) <= 600
        assert members(value) == ["upstream", "pixcache"]
    assert origin.hits["/up.jpg"] == 1


async def test_cache_status_keeps_every_upstream_member_in_order(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """RFC 9211 §2: upstream's List may already hold several caches' members (a String
    names one here); they all stay, in their order, before ours."""
    origin.add(
        "/lines",
        Obj(body=b"l", headers={**CACHEABLE, "Cache-Status": 'origin; fwd=miss, "Edge 1"; hit'}),
    )
    resp, _ = await proxy.get("/lines")
    assert members(cache_status(resp)) == ["origin", "Edge 1", "pixcache"]
    resp, _ = await proxy.get("/lines")
    assert cache_status(resp).startswith('origin; fwd=miss, "Edge 1"; hit, pixcache; hit; ttl=')


async def test_cache_status_appended_on_relayed_and_not_modified_responses(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """Every response pixcache sends carries upstream's members then its own: a response
    relayed without storing, and a 304 to a client's conditional request."""
    origin.add(
        "/nostore",
        Obj(body=b"n", headers={"Cache-Control": "no-store", "Cache-Status": "up; fwd=bypass"}),
    )
    resp, _ = await proxy.get("/nostore")
    assert cache_status(resp).startswith("up; fwd=bypass, pixcache; fwd=uri-miss")
    assert members(cache_status(resp)) == ["up", "pixcache"]
    origin.add(
        "/etag",
        Obj(body=b"e", headers={**CACHEABLE, "ETag": '"e"', "Cache-Status": "up; stored"}),
    )
    await proxy.get("/etag")
    resp, body = await proxy.get("/etag", headers={"If-None-Match": '"e"'})
    assert resp.status == 304 and body == b""
    assert cache_status(resp).startswith("up; stored, pixcache; hit; ttl=")


@pytest.mark.parametrize(
    "upstream",
    ["upstream hit", "upstream; hit;", "a, , b", "caf\u00e9; hit", 'x; detail="open'],
)
async def test_an_invalid_upstream_cache_status_is_dropped(
    origin: FakeOrigin, proxy: Proxy, upstream: str
) -> None:
    """RFC 8941 §4.2: a field value that does not parse as a List is ignored as a whole;
    the client then receives pixcache's member alone, on the miss and on the hit."""
    headers = {**CACHEABLE, "Cache-Status": upstream.encode().decode("latin-1")}
    origin.add("/bad", Obj(body=b"b", headers=headers))
    resp, _ = await proxy.get("/bad")
    assert cache_status(resp).startswith("pixcache; fwd=uri-miss")
    resp, _ = await proxy.get("/bad")
    assert cache_status(resp).startswith("pixcache; hit; ttl=")
    assert origin.hits["/bad"] == 1


# -- targeted cache-control fields (RFC 9213) ----------------------------------------------


@pytest.mark.parametrize(
    ("headers", "stored"),
    [
        # §2.1: not a valid Dictionary, or a member of the wrong type: the field is ignored
        # and Cache-Control decides.
        ({"CDN-Cache-Control": "max-age=10000, &&&&&", "Cache-Control": "no-store"}, False),
        ({"CDN-Cache-Control": 'max-age="10000"', "Cache-Control": "no-store"}, False),
        ({"CDN-Cache-Control": "no-store=?0", "Cache-Control": "max-age=600"}, True),
        ({"Pixcache-Cache-Control": "max-age=1.5", "CDN-Cache-Control": "max-age=600"}, True),
        # A valid one decides, extension directives and parameters notwithstanding.
        ({"CDN-Cache-Control": "foobar, max-age=600;x=1", "Cache-Control": "no-store"}, True),
    ],
    ids=["unknown-type", "wrong-type", "boolean-false", "next-target", "extension"],
)
async def test_only_a_valid_targeted_field_is_obeyed(
    origin: FakeOrigin, proxy: Proxy, headers: dict[str, str], stored: bool
) -> None:
    origin.add("/t", Obj(body=b"t", headers=headers))
    resp, _ = await proxy.get("/t")
    assert ("stored" in cache_status(resp).split("; ")) is stored
    resp, body = await proxy.get("/t")
    assert body == b"t" and cache_status(resp).startswith("pixcache; hit") is stored
    for name, value in headers.items():  # the client receives the fields unchanged
        assert resp.headers[name] == value
    assert origin.hits["/t"] == (1 if stored else 2)
