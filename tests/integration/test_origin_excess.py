"""RFC 9112 §6.3: an origin that sends more than its Content-Length is answered with exactly
Content-Length bytes; the excess reaches neither the cache nor a client, and the
connection that carried it answers no other request."""

from __future__ import annotations

import asyncio

import pytest

from tests.commits import settled
from tests.integration.conftest import MakeProxy, cache_status
from tests.raw_origin import RawOrigin, body_for

EXCESS = {
    "garbage": b"0123456789",
    # A whole response: read as the answer to the next request, it would poison /b.
    "a response": (
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 6\r\n\r\nPOISON"
    ),
}


@pytest.mark.parametrize("excess", EXCESS.values(), ids=EXCESS.keys())
async def test_bytes_past_content_length_are_dropped_with_their_connection(
    make_proxy: MakeProxy, excess: bytes
) -> None:
    async with RawOrigin(excess=excess) as origin:
        proxy = await make_proxy(origin.url)
        resp, body = await proxy.get("/a")
        assert resp.status == 200 and body == body_for(b"/a")
        assert resp.headers["Content-Length"] == str(len(body_for(b"/a")))
        await settled(proxy.cache_dir, entry=True)
        # Stored as exactly Content-Length bytes: the hit serves the same.
        resp, body = await proxy.get("/a")
        assert "hit" in cache_status(resp) and body == body_for(b"/a")
        # The next fetch does not take the leftover bytes for its answer.
        resp, body = await proxy.get("/b")
        assert resp.status == 200 and body == body_for(b"/b")
        assert origin.paths() == [b"/a", b"/b"]
        assert origin.connections == 2  # the first connection was never reused
        assert origin.malformed == 0


async def test_a_request_an_origin_closes_a_reused_connection_on_is_sent_on_a_new_one(
    make_proxy: MakeProxy,
) -> None:
    """RFC 9112 §9.3.1: a bodiless request that a reused connection closed on unanswered is
    sent again, on a new connection: the other pooled ones may be closing just the same (an
    origin that restarts drops them all at once)."""
    async with RawOrigin(answers_per_connection=1) as origin:
        proxy = await make_proxy(origin.url)
        first = await asyncio.gather(proxy.get("/a"), proxy.get("/b"))
        assert [(resp.status, body) for resp, body in first] == [
            (200, body_for(b"/a")),
            (200, body_for(b"/b")),
        ]
        assert origin.connections == 2  # both in the pool now, each closing on its next request
        resp, body = await proxy.get("/c")
        assert resp.status == 200 and body == body_for(b"/c")
        assert [r.target for r in origin.dropped] == [b"/c"]  # once, then a new connection
        assert origin.connections == 3
