"""Probes on the serving port, as a kubelet uses them: liveness and readiness without the
admin token, answered by pixcache and never by the origin; readiness 503 from SIGTERM on
while --shutdown-delay keeps every other request served, then the graceful stop."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp

from storage.layout import primary_key_hash
from tests.fake_origin import pattern_bytes
from tests.raw_client import exchange
from tests.system.procs import (
    free_port,
    start_origin,
    start_pixcache,
    stop,
    wait_for_children,
    wait_for_port,
)

LIVE, READY = "/_pixcache/health", "/_pixcache/ready"
PROBES = ("--liveness-path", LIVE, "--readiness-path", READY)
TOKEN = "t0ken-for-the-admin-listener"


def origin_hits(origin_url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{origin_url}/_hits", timeout=10) as resp:
        return json.loads(resp.read())


async def status_of(client: aiohttp.ClientSession, url: str, method: str = "GET") -> int:
    async with client.request(method, url) as resp:
        await resp.read()
        return resp.status


async def wait_for_exit(proc: subprocess.Popen) -> int:
    return await asyncio.to_thread(proc.wait, 30)


async def wait_for_status(
    client: aiohttp.ClientSession, url: str, status: int, times: int = 1
) -> None:
    """Until `url` answered `status` on `times` fresh connections in a row (bounded)."""
    in_a_row = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        in_a_row = in_a_row + 1 if await status_of(client, url) == status else 0
        if in_a_row >= times:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{url} did not answer {status} {times} times in a row")


async def wait_for_hit(client: aiohttp.ClientSession, url: str) -> None:
    """Until `url` is answered from the cache: its fill has committed (bounded)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        async with client.get(url) as resp:
            assert resp.status == 200
            await resp.read()
            if "hit" in resp.headers["Cache-Status"]:
                return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{url} was never a hit")


def fresh_connections() -> aiohttp.ClientSession:
    # A new connection per request: with several workers, each may land on any of them.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def test_readiness_turns_503_on_sigterm_while_requests_are_still_served(
    tmp_path: Path,
) -> None:
    objects = {"/a.jpg": (5000, 1), "/b.jpg": (7000, 2)}
    origin, origin_url = start_origin(objects)
    port = free_port()
    proc = start_pixcache(origin_url, tmp_path / "cache", port, *PROBES, "--shutdown-delay", "120")
    base = f"http://127.0.0.1:{port}"
    try:
        async with fresh_connections() as client:
            assert await status_of(client, base + READY) == 200
            await wait_for_hit(client, base + "/a.jpg")
            proc.send_signal(signal.SIGTERM)
            await wait_for_status(client, base + READY, 503)
            async with client.get(base + READY) as resp:
                body = await resp.json()
                assert resp.status == 503 and "shutting down" in body["problems"]
                assert resp.headers["Cache-Control"] == "no-store"
            # Liveness stays 200: the kubelet must not restart an instance that drains.
            assert await status_of(client, base + LIVE) == 200
            # During the delay a hit and a miss are both served as usual.
            async with client.get(base + "/a.jpg") as resp:
                assert resp.status == 200 and await resp.read() == pattern_bytes(5000, 1)
                assert "hit" in resp.headers["Cache-Status"]
            async with client.get(base + "/b.jpg") as resp:
                assert resp.status == 200 and await resp.read() == pattern_bytes(7000, 2)
            # A repeated SIGTERM (a service manager signals the whole group) goes on draining.
            proc.send_signal(signal.SIGTERM)
            assert await status_of(client, base + READY) == 503
            async with client.get(base + "/a.jpg") as resp:
                assert resp.status == 200 and await resp.read() == pattern_bytes(5000, 1)
            assert proc.poll() is None
        # SIGINT (a second Ctrl-C) ends the delay: the graceful stop follows, exit status 0.
        proc.send_signal(signal.SIGINT)
        assert await wait_for_exit(proc) == 0
    finally:
        stop(proc)
        stop(origin)


async def test_the_delay_ends_by_itself_with_the_graceful_stop(tmp_path: Path) -> None:
    origin, origin_url = start_origin({"/a.jpg": (5000, 1)})
    port = free_port()
    proc = start_pixcache(origin_url, tmp_path / "cache", port, *PROBES, "--shutdown-delay", "1")
    try:
        proc.send_signal(signal.SIGTERM)
        assert await wait_for_exit(proc) == 0
        assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    finally:
        stop(proc)
        stop(origin)


async def test_liveness_needs_no_token_while_the_admin_listener_does(tmp_path: Path) -> None:
    origin, origin_url = start_origin({"/a.jpg": (5000, 1)})
    port, admin_port = free_port(), free_port()
    admin = ("--admin-listen", f"127.0.0.1:{admin_port}", "--admin-token", TOKEN)
    proc = start_pixcache(origin_url, tmp_path / "cache", port, *PROBES, *admin)
    try:
        wait_for_port(admin_port, proc)
        async with fresh_connections() as client:
            async with client.get(f"http://127.0.0.1:{port}{LIVE}") as resp:
                assert resp.status == 200 and await resp.json() == {"status": "ok"}
            async with client.head(f"http://127.0.0.1:{port}{READY}") as resp:
                assert resp.status == 200
            assert await status_of(client, f"http://127.0.0.1:{admin_port}/healthz") == 401
    finally:
        stop(proc)
        stop(origin)


async def test_probe_paths_never_reach_the_origin_nor_the_cache(tmp_path: Path) -> None:
    # The origin has objects at the probe paths: were a probe forwarded, it would be served.
    objects = {LIVE: (100, 1), READY: (100, 2), "/a.jpg": (5000, 3)}
    origin, origin_url = start_origin(objects)
    port = free_port()
    proc = start_pixcache(origin_url, tmp_path / "cache", port, *PROBES)
    base = f"http://127.0.0.1:{port}"
    try:
        async with fresh_connections() as client:
            for path in (LIVE, READY):
                for target in (path, path + "?x=1", path + "?" + "y" * 50):
                    for method in ("GET", "HEAD"):
                        assert await status_of(client, base + target, method) == 200
                    for method in ("POST", "PUT", "DELETE", "PURGE"):
                        async with client.request(method, base + target) as resp:
                            assert resp.status == 405
                            assert resp.headers["Allow"] == "GET, HEAD"
            # The same path spelled with a percent-encoded letter is the probe too.
            encoded = LIVE.replace("health", "%68ealth")
            request = f"GET {encoded} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            reply = await exchange(port, request.encode())
            assert reply.status == 200 and reply.body == b'{"status": "ok"}'
            async with client.get(base + "/a.jpg") as resp:
                assert resp.status == 200 and await resp.read() == pattern_bytes(5000, 3)
            await wait_for_hit(client, base + "/a.jpg")  # committed: what is on disk is final
        hits = origin_hits(origin_url)
        assert hits == {"/a.jpg": 1}
        # Nothing was stored but the one object.
        heads = [p.name for p in (tmp_path / "cache" / "entries").glob("??/*")]
        assert heads == [primary_key_hash("/a.jpg")]
    finally:
        stop(proc)
        stop(origin)


async def test_every_worker_turns_unready_on_sigterm_and_keeps_serving(tmp_path: Path) -> None:
    origin, origin_url = start_origin({"/a.jpg": (5000, 1)})
    port = free_port()
    proc = start_pixcache(
        origin_url,
        tmp_path / "cache",
        port,
        *PROBES,
        "--workers",
        "2",
        "--shutdown-delay",
        "120",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_children(proc.pid, 2)
        async with fresh_connections() as client:
            await wait_for_status(client, base + READY, 200, times=10)
            proc.send_signal(signal.SIGTERM)
            # Twenty fresh connections in a row, spread by the kernel over both workers.
            await wait_for_status(client, base + READY, 503, times=20)
            for _ in range(10):
                async with client.get(base + "/a.jpg") as resp:
                    assert resp.status == 200 and await resp.read() == pattern_bytes(5000, 1)
        proc.send_signal(signal.SIGINT)  # the master passes it on: the delay ends
        assert await wait_for_exit(proc) == 0
    finally:
        stop(proc)
        stop(origin)


async def test_readiness_says_why_without_paths_and_recovers(tmp_path: Path) -> None:
    origin, origin_url = start_origin({"/a.jpg": (5000, 1)})
    port = free_port()
    cache = tmp_path / "cache"
    proc = start_pixcache(origin_url, cache, port, *PROBES)
    try:
        async with fresh_connections() as client:
            assert await status_of(client, f"http://127.0.0.1:{port}{READY}") == 200
            (cache / "tmp").rmdir()  # where every write starts: nothing can be stored now
            async with client.get(f"http://127.0.0.1:{port}{READY}") as resp:
                text = await resp.text()
                assert resp.status == 503
                assert json.loads(text)["problems"] == ["cache directory not writable"]
                assert str(tmp_path) not in text
            assert await status_of(client, f"http://127.0.0.1:{port}{LIVE}") == 200
            (cache / "tmp").mkdir()
            assert await status_of(client, f"http://127.0.0.1:{port}{READY}") == 200
    finally:
        stop(proc)
        stop(origin)
