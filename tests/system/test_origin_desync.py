"""An origin that sends what was not asked for, and a client whose framing is faulty, against
a real `pixcache serve`: bytes an origin sends on an idle pooled connection never become the
answer to the next request, an unasked 101 is a 502 that stores nothing, and an HTTP/1.0
request with Transfer-Encoding is refused and ends its connection."""

from __future__ import annotations

import asyncio
import fcntl
import re
import sys
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.raw_client import exchange
from tests.system.procs import free_port, start_pixcache, stop

POISON = b"POISON-BODY"


def response(target: bytes, extra: bytes = b"") -> bytes:
    body = b"object at " + target + b"\n"
    return (
        b"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=600\r\n%sContent-Length: %d\r\n\r\n"
        % (extra, len(body))
        + body
    )


UNASKED = (
    b"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=600\r\nContent-Length: %d\r\n\r\n%s"
    % (len(POISON), POISON)
)


class UnaskingOrigin:
    """Answers each request; after /first it waits, then sends a whole second response on
    the same keep-alive connection while no request is outstanding. /upgrade gets 101."""

    def __init__(self) -> None:
        self.targets: list[bytes] = []
        self.connections = 0
        self.opened_by: list[bytes] = []  # the first request of each connection
        self.first_answered = asyncio.Event()  # set by the test once its client has it
        self.unasked_sent = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        exchanges = 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                target = head.split(b" ", 2)[1]
                self.targets.append(target)
                if exchanges == 0:
                    self.opened_by.append(target)
                exchanges += 1
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                if target == b"/upgrade":
                    writer.write(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: upgrade\r\n\r\n" + POISON
                    )
                    await writer.drain()
                    continue
                writer.write(response(target))
                await writer.drain()
                if target == b"/first":
                    # The client has the whole body, so pixcache read all of it and has
                    # put the connection back in its pool.
                    await asyncio.wait_for(self.first_answered.wait(), 20)
                    writer.write(UNASKED)
                    await writer.drain()
                    await acknowledged(writer)  # the unasked bytes have reached pixcache
                    self.unasked_sent.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def acknowledged(writer: asyncio.StreamWriter, seconds: float = 10.0) -> None:
    """Wait until the peer's kernel has acknowledged every byte written: they wait in its
    receive queue, where a poll(2) sees them."""
    sock = writer.get_extra_info("socket")
    unacked = bytearray(4)
    for _ in range(int(seconds / 0.005)):
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, unacked)
        if int.from_bytes(unacked, sys.byteorder) == 0:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"bytes still unacknowledged after {seconds} s")


@asynccontextmanager
async def pixcache_before(origin: UnaskingOrigin, tmp_path: Path) -> AsyncIterator[int]:
    server = await asyncio.start_server(origin.serve, "127.0.0.1", 0)
    origin_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    port = free_port()
    proc = start_pixcache(origin_url, tmp_path / "cache", port)
    try:
        yield port
    finally:
        stop(proc)
        server.close()


async def get(session: aiohttp.ClientSession, port: int, path: str) -> tuple[int, bytes]:
    async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.read()


async def test_bytes_sent_on_an_idle_origin_connection_answer_no_request(tmp_path: Path) -> None:
    origin = UnaskingOrigin()
    async with pixcache_before(origin, tmp_path) as port, aiohttp.ClientSession() as session:
        assert await get(session, port, "/first") == (200, b"object at /first\n")
        origin.first_answered.set()
        await asyncio.wait_for(origin.unasked_sent.wait(), 5)
        assert await get(session, port, "/second") == (200, b"object at /second\n")
        # Stored as what the origin sent for it, not the unasked bytes.
        assert await get(session, port, "/second") == (200, b"object at /second\n")
    assert origin.targets == [b"/first", b"/second"]
    assert origin.connections == 2  # the connection that carried unasked bytes was dropped


async def test_a_request_with_a_body_never_takes_a_pooled_origin_connection(
    tmp_path: Path,
) -> None:
    """Its body goes out after awaits, so unasked bytes could arrive between the pool's look
    and the request: a POST always opens a connection of its own, where no earlier exchange
    can have left anything."""
    origin = UnaskingOrigin()
    async with pixcache_before(origin, tmp_path) as port, aiohttp.ClientSession() as session:
        assert await get(session, port, "/one") == (200, b"object at /one\n")
        for _ in range(2):
            async with session.post(f"http://127.0.0.1:{port}/form", data=b"x=1") as resp:
                assert (resp.status, await resp.read()) == (200, b"object at /form\n")
        assert await get(session, port, "/two") == (200, b"object at /two\n")
    assert origin.targets == [b"/one", b"/form", b"/form", b"/two"]
    # /two reused the pooled connection /one opened; each POST opened its own.
    assert origin.opened_by == [b"/one", b"/form", b"/form"]


async def test_an_unasked_101_is_a_502_and_nothing_is_stored(tmp_path: Path) -> None:
    origin = UnaskingOrigin()
    async with pixcache_before(origin, tmp_path) as port, aiohttp.ClientSession() as session:
        for _ in range(2):
            status, body = await get(session, port, "/upgrade")
            assert status == 502
            assert POISON not in body
        assert await get(session, port, "/after") == (200, b"object at /after\n")
    assert origin.targets == [b"/upgrade", b"/upgrade", b"/after"]


async def test_http10_with_transfer_encoding_is_refused_and_closes(tmp_path: Path) -> None:
    origin = UnaskingOrigin()
    async with pixcache_before(origin, tmp_path) as port:
        # RFC 9112 §6.1: where this body ends is not known, so neither is where the next
        # request starts; the "chunk" holds a request of its own.
        inner = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        request = (
            b"GET /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: keep-alive\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (len(inner), inner)
            + b"GET /pipelined HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answer = await exchange(port, request)
    assert answer.status == 400
    assert answer.body.count(b"HTTP/1.1") == 0  # nothing answered after the refusal
    assert origin.targets == []


async def test_http10_with_transfer_encoding_behind_a_body_is_refused(tmp_path: Path) -> None:
    origin = UnaskingOrigin()
    async with pixcache_before(origin, tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /first HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
            await writer.drain()
            for _ in range(2000):  # the head is parsed (its fill asked the origin) ...
                if b"/first" in origin.targets:
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError("the head never reached the origin")
            # ... and its body has not arrived
            writer.write(
                b"0123456789"
                b"GET /smuggled HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: keep-alive\r\n\r\n0\r\n\r\n"
            )
            await writer.drain()
            origin.first_answered.set()  # the origin goes on to send its unasked response
            async with asyncio.timeout(10):
                data = await reader.read(-1)
        finally:
            writer.close()
    assert re.findall(rb"HTTP/1\.[01] (\d{3}) ", data) == [b"200", b"400"]
    assert b"/smuggled" not in b" ".join(origin.targets)
