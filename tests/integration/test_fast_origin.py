"""Deadlines a fast origin cannot escape, and fills nobody reads (invariant 8).

An origin that always has the next bytes ready never lets a read wait, so a deadline armed
around the read alone would never fire: these tests use a raw-socket origin that sends an
endless body as fast as the connection takes it, and check that the total deadline ends the
fetch whether a client still reads it or not, with the temp file gone and the stage logged.
A fill that nobody reads any more and that will not be stored stops its download."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.fake_origin import pattern_bytes
from tests.fast_origin import BLOCK, FastOrigin
from tests.integration.conftest import MakeProxy, Proxy, cache_status
from tests.integration.test_s3_origin import aws_env  # noqa: F401 - a fixture

# The deadlines that should not fire are long, so a stage that waited for one is obvious.
LONG = {
    "connect_timeout": "20",
    "tls_timeout": "20",
    "header_timeout": "20",
    "read_timeout": "20",
    "total_timeout": "40",
}
# Not shareable (RFC 9111 §3.5): the fill hands it to the request that started it alone.
PRIVATE = b"Cache-Control: private, max-age=600\r\nContent-Type: image/jpeg\r\n"
# How long a test waits for a fetch to end before it calls it endless.
SETTLE_SECONDS = 10.0


async def until(condition: Callable[[], bool], seconds: float = SETTLE_SECONDS) -> float:
    """Poll `condition`; the seconds it took to hold. AssertionError if it did not within
    `seconds`."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while not condition():
        if loop.time() - began > seconds:
            raise AssertionError(f"still not true after {seconds} s")
        await asyncio.sleep(0.02)
    return loop.time() - began


def timeouts(logs: list[dict], stage: str) -> list[dict]:
    return [e for e in logs if e.get("event") == "origin_timeout" and e.get("stage") == stage]


def fetch_ended(origin: FastOrigin, proxy: Proxy) -> Callable[[], bool]:
    """The origin has no connection left and the fill's temp file is gone."""
    return lambda: origin.open_connections == 0 and not proxy.temp_files()


async def read_until_cut(resp: aiohttp.ClientResponse) -> int:
    """Read a body the proxy must cut; the byte count read before the cut."""
    got = 0
    with pytest.raises(aiohttp.ClientPayloadError):
        async with asyncio.timeout(SETTLE_SECONDS * 3):  # an endless body fails the test
            async for chunk in resp.content.iter_any():
                got += len(chunk)
    return got


@pytest.mark.parametrize("framing", ["chunked", "close"])
@pytest.mark.parametrize("client", ["reading", "gone"])
async def test_total_deadline_ends_an_endless_fast_body(
    make_proxy: MakeProxy, framing: str, client: str
) -> None:
    async with FastOrigin(framing=framing, max_seconds=60) as origin:
        proxy = await make_proxy(origin.url, **{**LONG, "total_timeout": "1"})
        with capture_logs() as logs:
            async with proxy.client.get(proxy.url + "/endless.bin") as resp:
                assert resp.status == 200
                if client == "reading":
                    assert await read_until_cut(resp) > 0
                else:
                    await resp.content.readexactly(BLOCK)
                    resp.close()
            await until(fetch_ended(origin, proxy))
        assert timeouts(logs, "total")
        assert proxy.entry_files() == []
        assert origin.requests == 1


async def test_total_deadline_ends_a_fill_waiting_for_a_reader_that_stopped_reading(
    make_proxy: MakeProxy,
) -> None:
    # Too large to store, so the body goes to the client through the in-memory tail, and
    # the fill waits for room while its only client reads nothing.
    size = 1 << 30
    async with FastOrigin(framing="length", size=size, max_seconds=60) as origin:
        proxy = await make_proxy(
            origin.url, **{**LONG, "total_timeout": "1"}, max_object_size=str(1 << 20)
        )
        address = urlsplit(proxy.url)
        with capture_logs() as logs:
            _, writer = await asyncio.open_connection(address.hostname, address.port)
            try:
                writer.write(b"GET /big.bin HTTP/1.1\r\nHost: pixcache\r\n\r\n")
                await writer.drain()
                await until(lambda: origin.requests == 1 and origin.open_connections == 0)
            finally:
                writer.close()
        assert timeouts(logs, "total")
        assert origin.sent < size
        assert proxy.temp_files() == [] and proxy.entry_files() == []


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_fill_nobody_reads_and_nothing_stores_stops_its_download(
    make_proxy: MakeProxy, framing: str
) -> None:
    # About 13 MB/s: 256 MiB would take 20 s. With a length the object is known to be too
    # large at once; chunked, only once the temp file has passed --max-object-size.
    size = 256 << 20
    async with FastOrigin(framing=framing, size=size, pace=0.005, max_seconds=60) as origin:
        proxy = await make_proxy(origin.url, **LONG, max_object_size=str(256 << 10))
        with capture_logs() as logs:
            async with proxy.client.get(proxy.url + "/huge.bin") as resp:
                await resp.content.readexactly(1 << 20)
                resp.close()  # the only client leaves
            await until(fetch_ended(origin, proxy))
        assert origin.sent < size // 16
        assert proxy.entry_files() == []
        assert [e for e in logs if e.get("event") == "fill_abandoned"]
        assert not [e for e in logs if e.get("event") in ("origin_timeout", "proxy_error")]


async def test_a_private_response_stops_its_download_once_its_one_client_leaves(
    make_proxy: MakeProxy,
) -> None:
    # Not shareable (RFC 9111 §3.5): the fill hands it to the request that started it
    # alone; once that client leaves, nobody may read the rest, so it is never downloaded.
    size = 256 << 20
    async with FastOrigin(
        framing="length", size=size, pace=0.005, max_seconds=60, headers=PRIVATE
    ) as origin:
        proxy = await make_proxy(origin.url, **LONG)
        async with proxy.client.get(proxy.url + "/mine.jpg") as resp:
            assert resp.status == 200 and resp.content_length == size
            assert cache_status(resp) == 'pixcache; fwd=uri-miss; fwd-status=200; detail="private"'
            first = await resp.content.readexactly(4 * BLOCK)
            resp.close()  # the only client leaves
        await until(fetch_ended(origin, proxy))
    assert first == pattern_bytes(BLOCK, seed=11) * 4
    assert origin.sent < size // 16
    assert proxy.entry_files() == []


@pytest.mark.parametrize("kind", ["too-large-to-store", "private"])
async def test_a_range_far_into_a_body_that_is_not_stored_is_answered(
    make_proxy: MakeProxy, kind: str
) -> None:
    # The body goes through the bounded in-memory tail, which holds bytes until every
    # reader has sent them: a reader that wants bytes past the bound must not hold it.
    size, first = 32 << 20, 20_000_000
    headers = PRIVATE if kind == "private" else FastOrigin.headers
    async with FastOrigin(framing="length", size=size, headers=headers) as origin:
        settings = {**LONG, "total_timeout": "20"}
        if kind == "too-large-to-store":
            settings["max_object_size"] = str(1 << 20)
        proxy = await make_proxy(origin.url, **settings)
        async with proxy.client.get(
            proxy.url + "/big.jpg", headers={"Range": f"bytes={first}-{first + 99}"}
        ) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes {first}-{first + 99}/{size}"
            body = await resp.read()
    block = pattern_bytes(BLOCK, seed=11)
    assert body == (block * 2)[first % BLOCK : first % BLOCK + 100]
    assert proxy.entry_files() == []


async def test_a_private_download_does_not_hold_a_fill_slot(make_proxy: MakeProxy) -> None:
    # A response that is the leader's alone is no longer one of the fills in flight: with a
    # single fill slot and no queue, another request still gets a fill while it streams.
    async with FastOrigin(
        framing="length", size=64 << 20, pace=0.01, headers=PRIVATE, max_seconds=60
    ) as origin:
        proxy = await make_proxy(origin.url, **LONG, max_fills="1", fill_queue="0")
        async with proxy.client.get(proxy.url + "/mine.jpg") as private:
            assert private.status == 200
            await private.content.readexactly(BLOCK)
            async with proxy.client.get(proxy.url + "/other.jpg") as other:
                assert other.status == 200, cache_status(other)
                await other.content.readexactly(BLOCK)
                other.close()
            private.close()
        await until(fetch_ended(origin, proxy))


async def test_an_unstored_fill_goes_on_while_one_reader_is_left(make_proxy: MakeProxy) -> None:
    size = 8 << 20
    # The headers come late, so that both requests join the one fill before it is known to
    # be too large to store (a fill that does not store takes no new requests).
    async with FastOrigin(framing="length", size=size, pace=0.002, header_delay=0.3) as origin:
        proxy = await make_proxy(origin.url, **LONG, max_object_size=str(256 << 10))
        async with aiohttp.ClientSession() as other:
            leaving, staying = await asyncio.gather(
                proxy.client.get(proxy.url + "/shared.bin"), other.get(proxy.url + "/shared.bin")
            )
            assert "collapsed" in cache_status(leaving) + cache_status(staying)
            await leaving.content.readexactly(BLOCK)
            leaving.close()
            body = await staying.read()
        assert len(body) == size
        assert origin.requests == 1 and origin.sent == size


async def test_bytes_past_content_length_never_reach_the_cache_or_a_client(
    make_proxy: MakeProxy,
) -> None:
    # RFC 9112 §6.3: the response is exactly Content-Length bytes.
    size = 3 * BLOCK + 5
    async with FastOrigin(framing="length", size=size, overrun=BLOCK) as origin:
        proxy = await make_proxy(origin.url, **LONG)
        first, body = await proxy.get("/over.bin")
        assert first.status == 200 and len(body) == size
        await until(lambda: not proxy.temp_files())
        second, again = await proxy.get("/over.bin")
        assert cache_status(second).startswith("pixcache; hit")
        assert again == body
        # The bytes past the end were not taken for the next response on that connection.
        third, other = await proxy.get("/other.bin")
        assert third.status == 200 and len(other) == size
        assert origin.requests == 2


async def test_s3_total_deadline_ends_an_endless_fast_body(
    aws_env: None,  # noqa: F811 - the fixture imported above
    make_proxy: MakeProxy,
) -> None:
    async with FastOrigin(framing="chunked", max_seconds=60) as endpoint:
        settings = {**LONG, "total_timeout": "1", "s3_endpoint_url": endpoint.url}
        proxy = await make_proxy("s3://images/pics", **settings)
        with capture_logs() as logs:
            async with proxy.client.get(proxy.url + "/endless.bin") as resp:
                assert resp.status == 200
                assert await read_until_cut(resp) > 0
            await until(fetch_ended(endpoint, proxy))
        [event] = timeouts(logs, "total")
        assert "'pics/endless.bin'" in event["error"]
        assert proxy.entry_files() == []
