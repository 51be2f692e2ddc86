"""Hostile client bytes against a real pixcache app and real loopback origins: framing that
would desynchronise the pooled origin connection, unkeyed fields that would shape a shared
fill, error bodies that would leak, ranges that would amplify, octets that would be lost."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from proxy.app import FILLS_KEY
from tests.commits import settled
from tests.fake_origin import FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import MakeProxy, Proxy, cache_status
from tests.raw_client import exchange
from tests.raw_origin import RawOrigin, body_for

SMUGGLED = b"GET /poison HTTP/1.1\r\nHost: evil\r\n\r\n"


def port_of(proxy: Proxy) -> int:
    port = urlsplit(proxy.url).port
    assert port is not None
    return port


def attack(method: bytes, framing: str) -> bytes:
    """`method /a` carrying content that is itself a request, framed by Content-Length or
    chunked coding."""
    if framing == "content-length":
        return (
            method + b" /a HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED
        )
    return (
        method + b" /a HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"
    )


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
async def test_content_on_get_or_head_never_reaches_the_pooled_origin_connection(
    make_proxy: MakeProxy, method: bytes, framing: str
) -> None:
    """RFC 9112 §6: pixcache frames what it forwards. A GET or HEAD goes without content and
    without the client's Content-Length or Transfer-Encoding, so the origin never takes the
    next client's request, sent on the same pooled connection, for this one's body."""
    async with RawOrigin() as origin:
        proxy = await make_proxy(origin.url)
        answer = await exchange(port_of(proxy), attack(method, framing))
        assert answer.status == 200
        if method == b"GET":
            assert answer.body == body_for(b"/a")
        # The next client, on the connection the first one left in the pool.
        resp, body = await proxy.get("/b", headers={"Cache-Control": "no-cache"})
        assert resp.status == 200 and body == body_for(b"/b")
        assert origin.malformed == 0
        assert origin.paths() == [b"/a", b"/b"]
        assert origin.connections == 1  # the same pooled connection carried both
        for request in origin.requests:
            assert request.field(b"content-length") is None, request.head
            assert request.field(b"transfer-encoding") is None, request.head
            assert SMUGGLED not in request.head
        # Nothing attacker-chosen was stored: both keys serve the origin's own bytes (once
        # the fills are done: a HEAD's fill of /a goes on after its answer).
        await proxy.fills_ended()
        for path in ("/a", "/b"):
            resp, body = await proxy.get(path)
            assert body == body_for(path.encode()) and "hit" in cache_status(resp)


async def test_expect_is_not_forwarded_and_other_methods_keep_their_content(
    make_proxy: MakeProxy,
) -> None:
    """A POST's content goes on with the length pixcache counted itself; Expect belongs to
    the client's hop and is not forwarded."""
    async with RawOrigin() as origin:
        proxy = await make_proxy(origin.url)
        answer = await exchange(
            port_of(proxy),
            b"POST /form HTTP/1.1\r\nHost: p\r\nConnection: close\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\nhello",
        )
        assert answer.status == 200
        resp, body = await proxy.get("/after")
        assert body == body_for(b"/after")
        post = origin.requests[0]
        assert post.field(b"content-length") == b"5"
        assert post.field(b"expect") is None
        assert origin.malformed == 0


@pytest.mark.parametrize(
    "name",
    [
        "X-Forwarded-Host",
        "X-Original-URL",
        "X-Rewrite-URL",
        "Forwarded",
        "X-HTTP-Method-Override",
    ],
)
async def test_unkeyed_fields_do_not_reach_a_shared_fill(make_proxy: MakeProxy, name: str) -> None:
    """Fields origins use to build URLs are not in the cache key: on a fill, fetched once for
    every client of the key, they are dropped, so one client cannot choose what all get."""
    async with RawOrigin() as origin:
        proxy = await make_proxy(origin.url)
        resp, body = await proxy.get("/img.jpg", headers={name: "evil.example"})
        assert resp.status == 200 and body == body_for(b"/img.jpg")
        assert origin.requests[0].field(name.encode()) is None
        assert b"evil.example" not in origin.requests[0].head


async def test_unkeyed_fields_setting_can_forward_them(make_proxy: MakeProxy) -> None:
    async with RawOrigin() as origin:
        proxy = await make_proxy(origin.url, unkeyed_request_fields="X-Original-URL")
        await proxy.get("/img.jpg", headers={"X-Forwarded-Host": "img.example"})
        assert origin.requests[0].field(b"X-Forwarded-Host") == b"img.example"
        await proxy.get("/two.jpg", headers={"X-Original-URL": "/other"})
        assert origin.requests[1].field(b"X-Original-URL") is None


async def test_header_octets_are_relayed_unchanged(make_proxy: MakeProxy) -> None:
    """RFC 9110 §5.5: obs-text is opaque. A client's Latin-1 octet reaches the origin, and
    an origin's reaches the client, on a miss and on the hit from the stored entry."""
    async with RawOrigin(
        extra=b"Cache-Control: max-age=600\r\nX-Name: caf\xe9 \xe2\x82\xac\r\n"
    ) as origin:
        proxy = await make_proxy(origin.url)
        request = (
            b"GET /n.jpg HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
            b"X-Client: gr\xfc\xdf \xe2\x82\xac\r\n\r\n"
        )
        miss = await exchange(port_of(proxy), request)
        hit = await exchange(port_of(proxy), request)
        assert origin.requests[0].field(b"X-Client") == b"gr\xfc\xdf \xe2\x82\xac"
        for answer in (miss, hit):
            assert answer.field(b"X-Name") == b"caf\xe9 \xe2\x82\xac", answer.head
        assert b"hit" in (hit.field(b"Cache-Status") or b"")


async def test_error_bodies_carry_no_request_values_nor_origin_address(
    make_proxy: MakeProxy,
) -> None:
    """An origin that answers garbage: the leader and a collapsed waiter each get a 502 that
    names the status, the stage and a request id, and neither the leader's Cookie nor the
    origin's address; the details are in the log, with the Cookie redacted."""
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        arrived.set()
        await release.wait()
        writer.write(b"HTTP/1.1 9999 \x00garbage\r\nX: y\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await make_proxy(f"http://127.0.0.1:{port}")
        leader = asyncio.create_task(
            proxy.get("/x.jpg", headers={"Cookie": "session=leader-secret-1234"})
        )
        await arrived.wait()
        waiter = asyncio.create_task(proxy.get("/x.jpg", headers={"Cookie": "session=waiter"}))
        while not proxy_has_waiter(proxy):  # the waiter joined the fill in flight
            await asyncio.sleep(0.01)
        release.set()
        for task in (leader, waiter):
            resp, body = await task
            assert resp.status == 502
            assert b"leader-secret" not in body and b"session=" not in body
            assert b"127.0.0.1" not in body and str(port).encode() not in body
            assert b"RequestInfo" not in body and b"<" not in body
            assert b"stage: headers" in body
            request_id = resp.headers["X-Request-Id"]
            assert f"request id: {request_id}".encode() in body
        assert "collapsed" in cache_status((await waiter)[0])
    finally:
        server.close()
        await server.wait_closed()


def proxy_has_waiter(proxy: Proxy) -> bool:
    """True once a second request joined the fill in flight (each request reading it is
    one of its body's readers)."""
    assert proxy.app is not None
    return any(fill.body.tail.readers > 1 for fill in proxy.app[FILLS_KEY].in_flight.values())


async def test_overlapping_ranges_cost_one_object(origin: FakeOrigin, proxy: Proxy) -> None:
    """RFC 9110 §14.2: 16 overlapping `0-` ranges are coalesced: the answer carries the
    object once, not 16 times (a 121-byte request must not fetch 134 MB)."""
    size = 8 * 1024 * 1024
    data = pattern_bytes(size, 5)
    origin.add("/big.jpg", Obj(body=data, headers={"Cache-Control": "max-age=600"}))
    ranges = {"Range": "bytes=" + ", ".join(["0-"] * 16)}
    for _ in range(2):  # a miss, then a hit
        resp, body = await proxy.get("/big.jpg", headers=ranges)
        assert len(body) <= size + 1024
        if resp.status == 206:
            assert resp.headers["Content-Range"] == f"bytes 0-{size - 1}/{size}"
        assert body == data
        await settled(proxy.cache_dir, entry=True)
    assert "hit" in cache_status(resp)
    many = {"Range": "bytes=" + ", ".join(f"{i}-{i + 10}" for i in range(0, 160, 10))}
    resp, body = await proxy.get("/big.jpg", headers=many)
    assert resp.status == 206 and body == data[:161]
