"""SIGTERM: stop accepting, let requests in flight finish within the grace, abandon what
does not finish cleanly (no temp files), exit 0. SIGHUP: nothing to reload, keeps serving."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.commits import storing
from tests.fake_origin import pattern_bytes
from tests.system.procs import free_port, start_origin, start_pixcache, stop

SIZE, SEED = 2 * 1024 * 1024, 3


async def _read_all(url: str) -> tuple[int, bytes | None]:
    async with aiohttp.ClientSession() as client:
        try:
            async with client.get(url) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, ConnectionError):
            return -1, None


async def test_sigterm_lets_a_request_in_flight_finish_and_exits_0(tmp_path: Path) -> None:
    # 32 chunks 30 ms apart: about a second of body.
    origin, origin_url = start_origin({"/slow.jpg": (SIZE, SEED)}, chunk_interval=0.03)
    port = free_port()
    proc = start_pixcache(origin_url, tmp_path / "cache", port)
    try:
        task = asyncio.ensure_future(_read_all(f"http://127.0.0.1:{port}/slow.jpg"))
        await storing(tmp_path / "cache")  # the request is in flight
        proc.send_signal(signal.SIGTERM)
        status, body = await task
        assert status == 200 and body == pattern_bytes(SIZE, SEED)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    finally:
        stop(proc)
        stop(origin)


async def test_sigterm_abandons_a_fill_past_the_grace_cleanly(tmp_path: Path) -> None:
    # About 6 s of body, a grace of 0.5 s.
    origin, origin_url = start_origin({"/slower.jpg": (SIZE, SEED)}, chunk_interval=0.2)
    port = free_port()
    proc = start_pixcache(origin_url, tmp_path / "cache", port, "--shutdown-grace", "0.5")
    try:
        task = asyncio.ensure_future(_read_all(f"http://127.0.0.1:{port}/slower.jpg"))
        await storing(tmp_path / "cache")  # the fill is under way
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        status, body = await task
        assert body != pattern_bytes(SIZE, SEED)  # cut short, and the client can tell
        assert list((tmp_path / "cache" / "tmp").iterdir()) == []
        assert [p for p in (tmp_path / "cache" / "entries").glob("??/*")] == []
    finally:
        stop(proc)
        stop(origin)


async def test_sighup_reloads_nothing_and_keeps_serving(tmp_path: Path) -> None:
    origin, origin_url = start_origin({"/a.jpg": (1000, 1)})
    port = free_port()
    log = tmp_path / "pixcache.log"
    proc = start_pixcache(origin_url, tmp_path / "cache", port, log=log)
    try:
        proc.send_signal(signal.SIGHUP)
        for _ in range(1000):  # until the signal was handled (bounded)
            if proc.poll() is not None or '"sighup"' in log.read_text():
                break
            await asyncio.sleep(0.01)
        assert proc.poll() is None
        status, body = await _read_all(f"http://127.0.0.1:{port}/a.jpg")
        assert status == 200 and body == pattern_bytes(1000, 1)
    finally:
        stop(proc)
        stop(origin)
