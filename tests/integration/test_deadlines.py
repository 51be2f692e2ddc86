"""Each stage of an origin fetch fails within its own deadline, with 504 (or 502), a
Cache-Status detail and a log event that name the stage and the origin, and nothing stored."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.fake_origin import BlackholeServer, FakeOrigin, Obj, SilentTLSServer, pattern_bytes
from tests.integration.conftest import MakeProxy, cache_status

CACHEABLE = {"Cache-Control": "max-age=600"}
# The deadlines that should not fire are long, so a stage that waited for one is obvious.
LONG = {
    "connect_timeout": "20",
    "tls_timeout": "20",
    "header_timeout": "20",
    "read_timeout": "20",
    "total_timeout": "40",
}


def _stage_events(logs: list[dict], stage: str) -> list[dict]:
    return [e for e in logs if e.get("event") == "origin_timeout" and e.get("stage") == stage]


async def _get(proxy, path: str) -> aiohttp.ClientResponse:
    # Which deadline fired shows in Cache-Status (stage=...); how soon is bench/'s business.
    async with proxy.client.get(proxy.url + path) as resp:
        await resp.read()
    return resp


async def test_connect_stage(make_proxy: MakeProxy) -> None:
    async with BlackholeServer() as blackhole:
        proxy = await make_proxy(blackhole.url, **{**LONG, "connect_timeout": "0.5"})
        with capture_logs() as logs:
            resp = await _get(proxy, "/x.jpg")
    assert resp.status == 504
    assert "stage=connect" in cache_status(resp)
    [event] = _stage_events(logs, "connect")
    assert event["origin"] == blackhole.url


async def test_tls_stage(make_proxy: MakeProxy) -> None:
    async with SilentTLSServer() as silent:
        proxy = await make_proxy(silent.url, **{**LONG, "tls_timeout": "0.5"})
        with capture_logs() as logs:
            resp = await _get(proxy, "/x.jpg")
    assert resp.status == 504
    assert "stage=tls" in cache_status(resp)
    assert _stage_events(logs, "tls")


async def test_tls_origin_that_works(make_proxy: MakeProxy, tmp_path) -> None:
    async with FakeOrigin(tls=True) as origin:
        ca_file = tmp_path / "ca.pem"
        origin.ca.cert_pem.write_to_path(str(ca_file))
        origin.add("/secure.jpg", Obj(body=b"tls body", headers=CACHEABLE))
        proxy = await make_proxy(origin.url, origin_ca_file=str(ca_file))
        resp, body = await proxy.get("/secure.jpg")
        assert resp.status == 200 and body == b"tls body"


async def test_headers_stage(origin: FakeOrigin, make_proxy: MakeProxy) -> None:
    origin.add("/late.jpg", Obj(body=b"late", headers=CACHEABLE, header_delay=3))
    proxy = await make_proxy(origin.url, **{**LONG, "header_timeout": "0.5"})
    with capture_logs() as logs:
        resp = await _get(proxy, "/late.jpg")
    assert resp.status == 504 and "stage=headers" in cache_status(resp)
    [event] = _stage_events(logs, "headers")
    assert event["origin"] == origin.url
    assert proxy.entry_files() == []


@pytest.mark.parametrize("mode", ["pause", "trickle"])
async def test_read_stage_aborts_the_client_response(
    origin: FakeOrigin, make_proxy: MakeProxy, mode: str
) -> None:
    body = pattern_bytes(50_000)
    origin.add(
        "/gap.jpg",
        Obj(body=body, headers=CACHEABLE, mode=mode, pause_seconds=5, trickle_interval=1.0),
    )
    # The image guard holds the first bytes before sending headers; off here, so that the
    # stall comes after the headers went out and the client's response must be cut.
    proxy = await make_proxy(origin.url, **{**LONG, "read_timeout": "0.4"}, verify_images="off")
    with capture_logs() as logs:
        async with proxy.client.get(proxy.url + "/gap.jpg") as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert _stage_events(logs, "read")
    assert proxy.entry_files() == [] and proxy.temp_files() == []


async def test_total_stage(origin: FakeOrigin, make_proxy: MakeProxy) -> None:
    # A trickle that never leaves a long gap, so only the total deadline can end it.
    origin.add(
        "/forever.jpg",
        Obj(body=pattern_bytes(10_000), headers=CACHEABLE, mode="trickle", trickle_interval=0.05),
    )
    proxy = await make_proxy(origin.url, **{**LONG, "total_timeout": "1"})
    with capture_logs() as logs:
        async with proxy.client.get(proxy.url + "/forever.jpg") as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert _stage_events(logs, "total")


async def test_total_stage_before_headers(origin: FakeOrigin, make_proxy: MakeProxy) -> None:
    origin.add("/slowhead.jpg", Obj(body=b"x", headers=CACHEABLE, header_delay=3))
    proxy = await make_proxy(origin.url, **{**LONG, "total_timeout": "0.5"})
    resp = await _get(proxy, "/slowhead.jpg")
    assert resp.status == 504 and "stage=total" in cache_status(resp)


async def test_refused_connection_is_502(make_proxy: MakeProxy) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        proxy = await make_proxy(f"http://127.0.0.1:{port}")
        with capture_logs() as logs:
            resp = await _get(proxy, "/x.jpg")
    assert resp.status == 502
    assert "origin_unavailable" in cache_status(resp)
    assert any(e.get("event") == "origin_unavailable" and e.get("stage") == "connect" for e in logs)
