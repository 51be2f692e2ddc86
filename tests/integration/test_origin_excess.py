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


class LateContentOrigin:
    """Answers /empty with a 204 that declares 5 bytes of content, and sends them only once
    the next request has come on that connection, just before its answer; a request on a
    new connection gets its answer alone."""

    def __init__(self) -> None:
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        late = b""
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                target = head.split(b" ", 2)[1]
                if target == b"/empty":
                    writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
                    late = b"hello"
                else:
                    body = body_for(target)
                    writer.write(
                        late + b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    late = b""
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def test_a_204_that_declares_content_does_not_answer_the_next_request(
    make_proxy: MakeProxy,
) -> None:
    """RFC 9110 §15.3.5: a 204 has no content; its connection is not reused, so content its
    origin sends late is never read as another request's answer."""
    origin = LateContentOrigin()
    server = await asyncio.start_server(origin.serve, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        proxy = await make_proxy(f"http://127.0.0.1:{port}")
        resp, body = await proxy.get("/empty")
        assert resp.status == 204 and body == b""
        resp, body = await proxy.get("/b")
        assert resp.status == 200 and body == body_for(b"/b")
        assert origin.connections == 2
    finally:
        server.close()
        await server.wait_closed()
