"""Partial content from and to the origin (RFC 9110 §14, RFC 9111 §3.3-§3.4): a miss says
Accept-Ranges like the hits of its entry; a 206 that carries the whole representation is
stored as the complete 200 and answers later ranges; any other 206 is relayed as it came,
never stored and never passed off as a complete 200."""

from __future__ import annotations

from tests.commits import settled
from tests.fake_origin import FakeOrigin, Obj
from tests.integration.conftest import Proxy, cache_status

DIGITS = b"0123456789"
CACHEABLE = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"}


async def test_a_stored_miss_says_accept_ranges_as_its_hits_do(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """RFC 9110 §14.3: nginx in front caches ranges only of responses that carry it."""
    origin.add("/a", Obj(body=DIGITS, headers=CACHEABLE))
    resp, body = await proxy.get("/a")
    assert "stored" in cache_status(resp) and body == DIGITS
    assert resp.headers["Accept-Ranges"] == "bytes"
    resp, _ = await proxy.get("/a")
    assert "hit" in cache_status(resp) and resp.headers["Accept-Ranges"] == "bytes"


async def test_a_response_that_is_not_stored_does_not_offer_ranges(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    origin.add("/private", Obj(body=DIGITS, headers={"Cache-Control": "private, max-age=60"}))
    resp, body = await proxy.get("/private")
    assert body == DIGITS and "Accept-Ranges" not in resp.headers


async def test_a_206_of_the_whole_representation_is_stored_as_the_complete_200(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """RFC 9111 §3.4: `bytes 0-9/10` is all of it; later ranges are served from it."""
    headers = {**CACHEABLE, "Content-Range": "bytes 0-9/10"}
    origin.add("/whole", Obj(status=206, body=DIGITS, headers=headers))
    resp, body = await proxy.get("/whole")
    assert resp.status == 200 and body == DIGITS
    assert "Content-Range" not in resp.headers
    await settled(proxy.cache_dir, entry=True)
    resp, body = await proxy.get("/whole", headers={"Range": "bytes=2-4"})
    assert resp.status == 206 and body == b"234"
    assert resp.headers["Content-Range"] == "bytes 2-4/10"
    assert "hit" in cache_status(resp)
    resp, body = await proxy.get("/whole")
    assert resp.status == 200 and body == DIGITS and "hit" in cache_status(resp)
    assert origin.hits["/whole"] == 1


async def test_a_206_of_part_of_it_is_relayed_and_never_stored(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """An origin that answers a fill (sent without Range) with part of the object: the
    client gets that 206 as it came, every time from the origin (RFC 9111 §3.3: a cache
    that does not store partial content must not store it as if complete)."""
    headers = {**CACHEABLE, "Content-Range": "bytes 4-8/10"}
    origin.add("/part", Obj(status=206, body=b"45678", headers=headers))
    for asked in ({}, {"Range": "bytes=4-8"}, {}):
        resp, body = await proxy.get("/part", headers=asked)
        assert resp.status == 206 and body == b"45678"
        assert resp.headers["Content-Range"] == "bytes 4-8/10"
        assert "hit" not in cache_status(resp).split("; ")
        assert "Accept-Ranges" not in resp.headers
    assert origin.hits["/part"] == 3
    assert not proxy.entry_files()


async def test_a_206_whose_length_is_unknown_is_not_taken_for_the_whole(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """RFC 9110 §14.4: `bytes 0-9/*` does not say that 10 bytes are all there is."""
    headers = {**CACHEABLE, "Content-Range": "bytes 0-9/*"}
    origin.add("/unknown", Obj(status=206, body=DIGITS, headers=headers))
    resp, body = await proxy.get("/unknown")
    assert resp.status == 206 and body == DIGITS
    await proxy.get("/unknown")
    assert origin.hits["/unknown"] == 2
