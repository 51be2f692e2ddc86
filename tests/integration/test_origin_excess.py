"""RFC 9112 §6.3: an origin that sends more than its Content-Length is answered with exactly
Content-Length bytes; the excess reaches neither the cache nor a client, and the
connection that carried it answers no other request."""

from __future__ import annotations

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
