"""Client connection limits of a real `pixcache serve`, driven with raw sockets: request
heads that trickle in are answered 408 and closed, idle keep-alive connections are closed,
oversized heads get 431, and past --max-connections new clients are still served while the
process never runs out of descriptors."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp

from tests.fake_origin import FakeOrigin, Obj
from tests.system.procs import REPO, free_port, start_origin, start_pixcache, stop

GET = b"GET /x.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
GET_AND_CLOSE = b"GET /x.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@contextmanager
def pixcache(tmp_path: Path, *flags: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """pixcache in front of an origin process serving /x.jpg (1000 bytes)."""
    origin, origin_url = start_origin({"/x.jpg": (1000, 1)})
    port = free_port()
    try:
        proc = start_pixcache(origin_url, tmp_path / "cache", port, *flags, log=tmp_path / "log")
        try:
            yield proc, port
        finally:
            stop(proc)
    finally:
        stop(origin)


@asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()


async def read_to_close(reader: asyncio.StreamReader, timeout: float = 20) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionError:
                return data
            if not chunk:
                return data
            data += chunk


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response with a Content-Length, leaving the connection open."""
    async with asyncio.timeout(20):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
    return int(head.split(b" ", 2)[1]), body


async def get_once(port: int) -> int:
    """The status of one request on a new connection (0: closed without a response)."""
    async with connection(port) as (reader, writer):
        writer.write(GET_AND_CLOSE)
        data = await read_to_close(reader)
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def test_request_heads_that_trickle_in_get_408_and_are_closed(tmp_path: Path) -> None:
    with pixcache(tmp_path, "--client-header-timeout", "2", "--client-idle-timeout", "60") as (
        proc,
        port,
    ):

        async def slowloris() -> bytes:
            """A head that never ends: one more field every 0.2 s (at most 150)."""
            async with connection(port) as (reader, writer):
                writer.write(b"GET /x.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                for n in range(150):
                    try:
                        writer.write(b"X-Slow-%d: 1\r\n" % n)
                        await writer.drain()
                        return await asyncio.wait_for(read_to_close(reader), 0.2)
                    except TimeoutError:
                        continue
                    except ConnectionError:
                        break
                return await read_to_close(reader)

        async def silent() -> bytes:
            async with connection(port) as (reader, _):
                return await read_to_close(reader)

        slow, quiet = await asyncio.gather(
            asyncio.gather(*(slowloris() for _ in range(30))),
            asyncio.gather(*(silent() for _ in range(30))),
        )
        assert {status_of(data) for data in slow} == {408}
        assert all(data.endswith(b"request head not received in time\n") for data in slow)
        assert set(quiet) == {b""}  # closed without a word: there was no request to answer
        assert await get_once(port) == 200


async def test_keep_alive_waits_under_the_idle_timeout_and_slow_heads_within_time_pass(
    tmp_path: Path,
) -> None:
    """The header timeout runs from a head's first byte, not while a keep-alive connection
    waits for its next request; a head that arrives in pieces within it is served."""
    with pixcache(tmp_path, "--client-header-timeout", "2", "--client-idle-timeout", "60") as (
        _,
        port,
    ):
        async with connection(port) as (reader, writer):
            writer.write(GET)
            assert (await read_response(reader))[0] == 200
            await asyncio.sleep(3)  # idle past the header timeout, within the idle timeout
            writer.write(b"GET /x.jpg HTTP/1.1\r\n")
            await asyncio.sleep(0.2)
            writer.write(b"Host: 127.0.0.1\r\n\r\n")
            status, body = await read_response(reader)
            assert status == 200 and len(body) == 1000


async def test_idle_keep_alive_connections_are_closed_after_the_idle_timeout(
    tmp_path: Path,
) -> None:
    with pixcache(tmp_path, "--client-idle-timeout", "1") as (proc, port):
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
        try:
            for reader, writer in clients:
                writer.write(GET)
                assert (await read_response(reader))[0] == 200
            leftovers = await asyncio.gather(*(read_to_close(reader) for reader, _ in clients))
            assert set(leftovers) == {b""}  # closed by pixcache, nothing more sent
        finally:
            for _, writer in clients:
                writer.close()
        assert await get_once(port) == 200


async def test_oversized_heads_get_431_with_a_short_body(tmp_path: Path) -> None:
    flags = ("--max-header-size", "32K", "--max-header-fields", "50")
    with pixcache(tmp_path, *flags) as (proc, port):

        async def send(head_fields: bytes) -> bytes:
            async with connection(port) as (reader, writer):
                writer.write(b"GET /x.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head_fields)
                writer.write(b"Connection: close\r\n\r\n")
                try:
                    await writer.drain()
                except ConnectionError:
                    pass  # refused while still sending: the answer is still there to read
                return await read_to_close(reader)

        def fields(count: int, size: int) -> bytes:
            return b"".join(b"X-F%d: %s\r\n" % (n, b"a" * size) for n in range(count))

        # (Fields go on to the origin, whose own limit is 8190 bytes a field.)
        assert status_of(await send(fields(4, 7500))) == 200
        assert status_of(await send(fields(48, 10))) == 200  # 48 + Host + Connection = 50
        big_field = await send(fields(1, 40_000))
        many_fields = await send(fields(49, 10))
        for data in (big_field, many_fields):
            head, _, body = data.partition(b"\r\n\r\n")
            assert status_of(data) == 431
            assert b"Connection: close" in head
            assert body == b"request header fields too large\n"

        # A megabyte of head each, 50 at once: every client reads its 431.
        megabyte = fields(125, 8000)
        answers = await asyncio.gather(*(send(megabyte) for _ in range(50)))
        assert {status_of(data) for data in answers} == {431}
        assert proc.poll() is None
        assert await get_once(port) == 200


async def test_past_max_connections_idle_ones_make_room_and_descriptors_last(
    tmp_path: Path,
) -> None:
    """300 idle connections against --max-connections 20 and an open-files limit of 128:
    each new client is served, and the process never runs out of descriptors."""
    with pixcache(tmp_path, "--max-connections", "20", "--max-fills", "4") as (proc, port):
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (128, 128))
        idle = []
        try:
            for _ in range(300):
                idle.append(await asyncio.open_connection("127.0.0.1", port))
            statuses = [await get_once(port) for _ in range(20)]
            assert statuses == [200] * 20
            assert open_files(proc.pid) < 128
            # The oldest idle connections were the ones closed to make room.
            closed = await asyncio.gather(*(read_to_close(r, timeout=5) for r, _ in idle[:100]))
            assert set(closed) == {b""}
        finally:
            for _, writer in idle:
                writer.close()
        assert proc.poll() is None
        assert b"Too many open files" not in (tmp_path / "log").read_bytes()


async def test_past_max_connections_with_every_connection_busy_new_ones_get_503(
    tmp_path: Path,
) -> None:
    """Connections in the middle of a request are never closed to make room: a new one
    gets 503 at once, and is served again once a connection is free."""
    async with FakeOrigin() as origin:
        for n in range(5):
            origin.add(f"/slow{n}", Obj(size=200_000, mode="pause", pause_seconds=60))
        origin.add("/x.jpg", Obj(body=b"x" * 1000, headers={"Cache-Control": "max-age=60"}))
        port = free_port()
        # A short grace: the stalled fills are still in flight when the test stops it.
        flags = ("--max-connections", "5", "--shutdown-grace", "0.5")
        proc = start_pixcache(origin.url, tmp_path / "cache", port, *flags, log=tmp_path / "log")
        busy = []
        try:
            for n in range(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /slow%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % n)
                busy.append((reader, writer))
            for reader, _ in busy:  # each is receiving its response, stalled mid-body
                async with asyncio.timeout(20):
                    await reader.readuntil(b"\r\n\r\n")
            async with connection(port) as (reader, writer):
                writer.write(GET_AND_CLOSE)
                refused = await read_to_close(reader)
            assert status_of(refused) == 503 and b"Retry-After: 1" in refused
            busy.pop()[1].close()
            deadline = time.monotonic() + 20
            status = 0
            while status != 200 and time.monotonic() < deadline:
                status = await get_once(port)
            assert status == 200
        finally:
            for _, writer in busy:
                writer.close()
            stop(proc)


def test_a_connection_limit_beyond_the_open_files_limit_is_refused_at_start(
    tmp_path: Path,
) -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--origin", "http://127.0.0.1:9"]
        + ["--cache-dir", str(tmp_path / "cache"), "--listen", f"127.0.0.1:{free_port()}"]
        + ["--admin-listen", f"127.0.0.1:{free_port()}", "--max-connections", "5000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=low_limit,
    )
    assert result.returncode == 2
    assert "--max-connections" in result.stderr and "256" in result.stderr


async def stalled_client(port: int, path: bytes, cut: Callable[[], bool]) -> tuple[int, float]:
    """Ask for `path` on a socket with a small receive buffer, read nothing until `cut()`
    says the server gave up on us (bounded), then read to the end: the bytes received and
    when the connection ended."""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    began = time.monotonic()
    try:
        writer.write(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path)
        for _ in range(3000):
            if cut():
                break
            await asyncio.sleep(0.01)
        received = len(await read_to_close(reader, timeout=30))
    finally:
        writer.close()
    return received, time.monotonic() - began


async def test_a_client_that_stops_reading_is_cut_at_the_send_timeout(tmp_path: Path) -> None:
    """A miss (streamed from the origin) and then a hit (sent by sendfile), each to a client
    that reads nothing: both connections are cut after --client-send-timeout, while other
    clients are served meanwhile and the object is stored whole."""
    size = 64 << 20
    origin, origin_url = start_origin({"/big.bin": (size, 7), "/x.jpg": (1000, 1)})
    port, log = free_port(), tmp_path / "log"
    proc = None
    try:
        proc = start_pixcache(
            origin_url, tmp_path / "cache", port, "--client-send-timeout", "2", log=log
        )
        for cuts, attempt in enumerate(("miss", "hit"), start=1):

            def cut(cuts: int = cuts) -> bool:
                return log.read_text().count("client_send_timeout") >= cuts

            stalled = asyncio.create_task(stalled_client(port, b"/big.bin", cut))
            await asyncio.sleep(0.5)
            assert await get_once(port) == 200  # /x.jpg meanwhile: the worker is not held
            received, _ = await stalled
            assert received < size, attempt  # cut, not sent whole to a client not reading
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/big.bin") as resp:
                assert resp.headers["Cache-Status"].startswith("pixcache; hit")
                assert len(await resp.read()) == size
    finally:
        if proc is not None:
            stop(proc)
        stop(origin)
    lines = log.read_text().splitlines()
    assert sum("client_send_timeout" in line for line in lines) == 2
    cut = [json.loads(line) for line in lines if '"status": 499' in line]
    assert [event["cache"] for event in cut] == ["uri-miss", "hit"]
