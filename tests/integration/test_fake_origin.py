"""The fake origin misbehaves exactly as advertised, seen from a plain client on loopback.

Every other integration test trusts these fault modes, so each one is shown here with what a
client really receives: a plain aiohttp client for the HTTP view, raw sockets where the
difference lies below HTTP (FIN versus RST, a missing chunked terminator).
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.http_exceptions import ContentLengthError

from tests.fake_origin import BlackholeServer, FakeOrigin, Obj, SilentTLSServer, pattern_bytes

REPO = Path(__file__).resolve().parents[2]
CACHEABLE = {"Cache-Control": "max-age=60", "ETag": '"v1"', "Content-Type": "image/jpeg"}


@pytest_asyncio.fixture
async def origin() -> AsyncIterator[FakeOrigin]:
    async with FakeOrigin() as fake:
        yield fake


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def raw_get(port: int, path: str) -> tuple[bytes, BaseException | None]:
    """Send a GET over a raw socket and return every byte received until EOF or error."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n".encode())
    received = bytearray()
    error: BaseException | None = None
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except OSError as exc:
        error = exc
    writer.close()
    return bytes(received), error


def split_response(raw: bytes) -> tuple[bytes, bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    return head, body


# --- pattern_bytes -------------------------------------------------------------------------


def test_pattern_bytes_is_deterministic_sliceable_and_seeded() -> None:
    whole = pattern_bytes(300_000, seed=5)
    assert len(whole) == 300_000
    assert pattern_bytes(300_000, seed=5) == whole
    # A slice at any offset equals the same range of the full body, across chunk boundaries.
    assert pattern_bytes(1_000, seed=5, offset=65_000) == whole[65_000:66_000]
    assert pattern_bytes(0, seed=5, offset=10) == b""
    assert pattern_bytes(4096, seed=6) != whole[:4096]
    # Consecutive chunks differ, so a body shifted by a whole chunk is not equal.
    assert whole[:65536] != whole[65536:131072]


def test_obj_rejects_ambiguous_or_unknown_settings() -> None:
    with pytest.raises(ValueError):
        Obj(body=b"x", size=1)
    with pytest.raises(ValueError):
        Obj(body=b"x", mode="stall")


# --- normal responses ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_normal_literal_body_and_headers(
    origin: FakeOrigin, client: aiohttp.ClientSession
) -> None:
    origin.add("/a.jpg", b"jpeg bytes", headers=CACHEABLE)
    async with client.get(origin.url + "/a.jpg") as resp:
        assert resp.status == 200
        assert await resp.read() == b"jpeg bytes"
        assert resp.headers["Content-Length"] == "10"
        assert resp.headers["Cache-Control"] == "max-age=60"
        assert resp.headers["ETag"] == '"v1"'
        assert resp.headers["Content-Type"] == "image/jpeg"


@pytest.mark.asyncio
async def test_normal_generated_body_is_the_pattern(
    origin: FakeOrigin, client: aiohttp.ClientSession
) -> None:
    size = 3 * 65536 + 123  # several chunks and a ragged end
    origin.add("/gen.bin", size=size, seed=9, status=203, headers={"X-Kind": "gen"})
    async with client.get(origin.url + "/gen.bin") as resp:
        assert resp.status == 203
        assert resp.headers["Content-Length"] == str(size)
        assert resp.headers["X-Kind"] == "gen"
        assert await resp.read() == pattern_bytes(size, seed=9)


@pytest.mark.asyncio
async def test_chunked_flag_sends_without_content_length(origin: FakeOrigin) -> None:
    origin.add("/c.bin", size=100_000, seed=1, chunked=True)
    raw, error = await raw_get(origin.port, "/c.bin")
    head, body = split_response(raw)
    assert error is None
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"content-length" not in head.lower()
    assert body.endswith(b"\r\n0\r\n\r\n")  # properly terminated
    async with aiohttp.ClientSession() as session, session.get(origin.url + "/c.bin") as resp:
        assert await resp.read() == pattern_bytes(100_000, seed=1)


@pytest.mark.asyncio
async def test_header_delay_holds_back_the_status_line(
    origin: FakeOrigin, client: aiohttp.ClientSession
) -> None:
    origin.add("/late", b"late", header_delay=0.4)
    timeout = aiohttp.ClientTimeout(sock_read=0.1)
    with pytest.raises(asyncio.TimeoutError):  # what a response-header deadline sees
        async with client.get(origin.url + "/late", timeout=timeout):
            pass
    began = time.monotonic()
    async with client.get(origin.url + "/late") as resp:
        assert await resp.read() == b"late"
    assert time.monotonic() - began >= 0.35


# --- slow bodies ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_trickle_sends_one_byte_at_a_time(
    origin: FakeOrigin, client: aiohttp.ClientSession
) -> None:
    origin.add("/t", b"abcde", mode="trickle", trickle_interval=0.1)
    began = time.monotonic()
    async with client.get(origin.url + "/t") as resp:
        assert resp.headers["Content-Length"] == "5"
        first = await resp.content.readany()
        rest = await resp.content.read()
    elapsed = time.monotonic() - began
    assert first == b"a"  # the first byte arrives alone, before the others exist
    assert first + rest == b"abcde"
    assert elapsed >= 4 * 0.1 * 0.9  # four gaps between five bytes


@pytest.mark.asyncio
async def test_pause_sends_half_then_stalls_then_the_rest(
    origin: FakeOrigin, client: aiohttp.ClientSession
) -> None:
    body = bytes(range(100))
    origin.add("/p", body, mode="pause", pause_seconds=0.5)
    async with client.get(origin.url + "/p") as resp:
        first = await resp.content.readexactly(50)
        stalled_at = time.monotonic()
        rest = await resp.content.read()
        assert time.monotonic() - stalled_at >= 0.4
    assert first + rest == body
    # A between-bytes deadline shorter than the pause fires on the stall.
    with pytest.raises(asyncio.TimeoutError):
        async with client.get(origin.url + "/p", timeout=aiohttp.ClientTimeout(sock_read=0.2)) as r:
            await r.read()


# --- broken bodies -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_short_declares_full_length_then_closes_with_fin(
    origin: FakeOrigin, client: aiohttp.ClientSession
) -> None:
    body = pattern_bytes(10_000, seed=2)
    origin.add("/short", body, mode="short")
    raw, error = await raw_get(origin.port, "/short")
    head, received = split_response(raw)
    assert error is None  # a clean EOF, not a reset
    assert b"content-length: 10000" in head.lower()
    assert received == body[:5_000]
    async with client.get(origin.url + "/short") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError) as caught:
            await resp.read()
    assert isinstance(caught.value.__cause__, ContentLengthError)


@pytest.mark.asyncio
async def test_chunked_truncated_never_sends_the_last_chunk(
    origin: FakeOrigin, client: aiohttp.ClientSession
) -> None:
    body = pattern_bytes(10_000, seed=3)
    origin.add("/ct", body, mode="chunked_truncated")
    raw, error = await raw_get(origin.port, "/ct")
    head, received = split_response(raw)
    assert error is None
    assert b"transfer-encoding: chunked" in head.lower()
    assert not received.endswith(b"0\r\n\r\n")
    assert body[:5_000] in received
    async with client.get(origin.url + "/ct") as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


@pytest.mark.asyncio
async def test_reset_sends_half_then_rst(origin: FakeOrigin, client: aiohttp.ClientSession) -> None:
    body = pattern_bytes(10_000, seed=4)
    origin.add("/rst", body, mode="reset")
    raw, error = await raw_get(origin.port, "/rst")
    _, received = split_response(raw)
    assert isinstance(error, ConnectionResetError)  # RST, not FIN
    assert received == body[:5_000]
    async with client.get(origin.url + "/rst") as resp:
        assert resp.status == 200
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
            await resp.read()


# --- HTTP semantics ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_head_answers_headers_only(origin: FakeOrigin, client: aiohttp.ClientSession) -> None:
    origin.add("/h.jpg", size=5000, headers=CACHEABLE)
    async with client.head(origin.url + "/h.jpg") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "5000"
        assert resp.headers["ETag"] == '"v1"'
        assert await resp.read() == b""
    assert origin.hits["/h.jpg"] == 1
    assert origin.requests[-1][:2] == ("HEAD", "/h.jpg")


@pytest.mark.asyncio
async def test_unknown_path_is_404_and_other_methods_answer_ok(
    origin: FakeOrigin, client: aiohttp.ClientSession
) -> None:
    async with client.get(origin.url + "/missing.jpg") as resp:
        assert resp.status == 404
        assert "not found" in await resp.text()
    async with client.post(origin.url + "/hook", data=b"payload") as resp:
        assert resp.status == 200 and await resp.text() == "ok"
    async with client.delete(origin.url + "/hook") as resp:
        assert resp.status == 200
    origin.add("/obj", b"object body")
    async with client.put(origin.url + "/obj", data=b"x") as resp:
        assert await resp.read() == b"object body"
    assert [(m, p) for m, p, _ in origin.requests] == [
        ("GET", "/missing.jpg"),
        ("POST", "/hook"),
        ("DELETE", "/hook"),
        ("PUT", "/obj"),
    ]
    assert origin.hits == {"/missing.jpg": 1, "/hook": 2, "/obj": 1}


@pytest.mark.asyncio
async def test_if_none_match_gets_304_with_validators(
    origin: FakeOrigin, client: aiohttp.ClientSession
) -> None:
    origin.add("/e.jpg", b"body", headers={**CACHEABLE, "X-Version": "2"})
    for tag in ('"v1"', 'W/"v1"', '"other", "v1"', "*"):
        async with client.get(origin.url + "/e.jpg", headers={"If-None-Match": tag}) as resp:
            assert resp.status == 304, tag
            assert resp.headers["ETag"] == '"v1"'
            assert resp.headers["Cache-Control"] == "max-age=60"
            assert resp.headers["X-Version"] == "2"
            assert await resp.read() == b""
    async with client.get(origin.url + "/e.jpg", headers={"If-None-Match": '"v0"'}) as resp:
        assert resp.status == 200 and await resp.read() == b"body"


@pytest.mark.asyncio
async def test_if_modified_since_gets_304_on_exact_match(
    origin: FakeOrigin, client: aiohttp.ClientSession
) -> None:
    stamp = "Sun, 06 Nov 1994 08:49:37 GMT"
    origin.add("/lm.jpg", b"body", headers={"Last-Modified": stamp})
    async with client.get(origin.url + "/lm.jpg", headers={"If-Modified-Since": stamp}) as resp:
        assert resp.status == 304
        assert resp.headers["Last-Modified"] == stamp
    other = "Mon, 07 Nov 1994 08:49:37 GMT"
    async with client.get(origin.url + "/lm.jpg", headers={"If-Modified-Since": other}) as resp:
        assert resp.status == 200


@pytest.mark.asyncio
async def test_hits_count_on_arrival_and_requests_record_everything(
    origin: FakeOrigin, client: aiohttp.ClientSession
) -> None:
    origin.add("/slow.jpg", b"s", header_delay=0.5)
    pending = asyncio.create_task(
        client.get(origin.url + "/slow.jpg?w=100", headers={"X-Probe": "yes"})
    )
    for _ in range(40):  # the request is counted while its response is still held back
        if origin.hits["/slow.jpg"]:
            break
        await asyncio.sleep(0.01)
    assert origin.hits["/slow.jpg"] == 1
    assert not pending.done()
    resp = await pending
    assert await resp.read() == b"s"
    resp.release()
    method, path_qs, headers = origin.requests[0]
    assert (method, path_qs) == ("GET", "/slow.jpg?w=100")
    assert headers["X-Probe"] == headers["x-probe"] == "yes"  # names are case-insensitive
    assert "X-PROBE" in headers


@pytest.mark.asyncio
async def test_tls_origin_is_trusted_through_its_ca(client: aiohttp.ClientSession) -> None:
    async with FakeOrigin(tls=True) as origin:
        origin.add("/secure.jpg", b"tls body")
        assert origin.url.startswith("https://127.0.0.1:")
        context = origin.ssl_client_context()
        async with client.get(origin.url + "/secure.jpg", ssl=context) as resp:
            assert await resp.read() == b"tls body"
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await client.get(origin.url + "/secure.jpg", ssl=ssl.create_default_context())


# --- below HTTP ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_blackhole_connect_never_completes() -> None:
    async with BlackholeServer() as blackhole:
        assert blackhole.url == f"http://127.0.0.1:{blackhole.port}"
        # Two seconds covers Linux's first SYN retransmission: that one is dropped too.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", blackhole.port), 2)
        timeout = aiohttp.ClientTimeout(sock_connect=0.2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with pytest.raises(aiohttp.ConnectionTimeoutError):
                await session.get(blackhole.url + "/x.jpg")


@pytest.mark.asyncio
async def test_silent_tls_server_stalls_the_handshake() -> None:
    async with SilentTLSServer() as silent:
        assert silent.url == f"https://127.0.0.1:{silent.port}"
        # TCP connects at once: the stall is in the TLS stage, not in connect.
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", silent.port), 1)
        writer.close()
        context = ssl.create_default_context()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", silent.port, ssl=context), 0.5
            )
        async with aiohttp.ClientSession() as session:
            with pytest.raises(asyncio.TimeoutError):
                await session.get(silent.url + "/x.jpg", timeout=aiohttp.ClientTimeout(total=0.5))


# --- as a separate process -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_subprocess_prints_ready_serves_objects_and_hits() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fake_origin",
        "--port",
        "0",
        "--gen",
        "/big.bin=100000:3",
        "--gen",
        "/k.bin=1K",
        "--delay",
        "0.05",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert line.startswith("READY "), line
        url = f"http://127.0.0.1:{int(line.split()[1])}"
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/big.bin") as resp:
                assert resp.headers["Cache-Control"] == "max-age=3600"
                assert resp.headers["ETag"]
                assert await resp.read() == pattern_bytes(100_000, seed=3)
            async with session.get(url + "/k.bin") as resp:
                assert await resp.read() == pattern_bytes(1024)
            async with session.get(url + "/big.bin") as resp:
                await resp.read()
            async with session.get(url + "/_hits") as resp:
                assert json.loads(await resp.text()) == {"/big.bin": 2, "/k.bin": 1}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
