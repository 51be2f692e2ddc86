"""Interim responses (RFC 9110 §15.2) from the origin: aiohttp's client reads past them to
the final response, so pixcache cannot pass them on; none of their fields is stored or
reaches a client as part of the final response (RFC 9111 §3: only final responses are
stored)."""

from __future__ import annotations

import asyncio

import pytest

from tests.commits import settled
from tests.integration.conftest import MakeProxy, cache_status

BODY = b"final body"
INTERIM = {
    "103": b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n"
    b"X-Interim: 1\r\nCache-Control: max-age=100000\r\n\r\n",
    "102": b"HTTP/1.1 102 Processing\r\nX-Interim: 1\r\n\r\n",
    "100": b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n",
}


@pytest.mark.parametrize("interim", INTERIM.values(), ids=INTERIM.keys())
async def test_interim_responses_are_neither_stored_nor_merged(
    make_proxy: MakeProxy, interim: bytes
) -> None:
    requests = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                requests += 1
                writer.write(interim)
                await writer.drain()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        proxy = await make_proxy(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        resp, body = await proxy.get("/x")
        assert resp.status == 200 and body == BODY
        assert "X-Interim" not in resp.headers and "Link" not in resp.headers
        assert resp.headers["Cache-Control"] == "max-age=600"
        await settled(proxy.cache_dir, entry=True)
        resp, body = await proxy.get("/x")
        assert "hit" in cache_status(resp) and body == BODY
        assert "X-Interim" not in resp.headers and "Link" not in resp.headers
        assert requests == 1
    finally:
        server.close()
        await server.wait_closed()
