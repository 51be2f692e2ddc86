"""SIGKILL `pixcache serve` in the middle of concurrent fills of large objects, restart it,
and show that every object is then served complete and correct, never partial."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import aiohttp
import pytest

from storage.remove import remove_entry
from tests.commits import settled
from tests.fake_origin import pattern_bytes
from tests.system.procs import (
    REPO,
    free_port,
    start_origin,
    start_pixcache,
    stop,
    wait_for_children,
)
from tests.zygote import run_python

OBJECTS = {f"/big{i}.jpg": (8 * 1024 * 1024 + i * 4099, i) for i in range(6)}
ROUNDS = 4


async def _fetch_all(url: str) -> list[tuple[str, int, bytes | None, str]]:
    async with aiohttp.ClientSession() as client:

        async def one(path: str) -> tuple[str, int, bytes | None, str]:
            try:
                async with client.get(url + path) as resp:
                    body = await resp.read()
                    return path, resp.status, body, resp.headers.get("Cache-Status", "")
            except (aiohttp.ClientError, ConnectionError) as exc:
                return path, -1, None, repr(exc)

        return await asyncio.gather(*(one(p) for p in OBJECTS for _ in range(2)))


async def _hammer_then_kill(url: str, proc, delay: float) -> None:
    task = asyncio.ensure_future(_fetch_all(url))
    await asyncio.sleep(delay)
    stop(proc, signal.SIGKILL)
    await asyncio.gather(task, return_exceptions=True)


async def test_sigkill_during_fills_never_leaves_a_partial_entry(tmp_path: Path) -> None:
    expected = {path: pattern_bytes(size, seed) for path, (size, seed) in OBJECTS.items()}
    # About 1.5 s per object, so that kills land in the middle of fills.
    origin_proc, origin_url = start_origin(OBJECTS, chunk_interval=0.01)
    cache_dir = tmp_path / "cache"
    rng = random.Random(1234)
    killed_mid_fill = 0
    try:
        for _ in range(ROUNDS):
            port = free_port()
            proc = start_pixcache(origin_url, cache_dir, port)
            await _hammer_then_kill(f"http://127.0.0.1:{port}", proc, rng.uniform(0.1, 1.2))
            killed_mid_fill += len(list((cache_dir / "tmp").iterdir()))
        # The kills really did land in the middle of fills: their temp files were left.
        assert killed_mid_fill > 0

        port = free_port()
        proc = start_pixcache(origin_url, cache_dir, port)
        try:
            # Leftover temp files of the killed processes were swept at start.
            assert [p for p in (cache_dir / "tmp").iterdir() if p.is_file()] == []
            for _ in range(2):  # first: whatever survived the kills, then: hits
                results = await _fetch_all(f"http://127.0.0.1:{port}")
                for path, status, body, cache in results:
                    assert status == 200, (path, cache)
                    assert body == expected[path], f"{path} served wrong bytes ({cache})"
                await settled(cache_dir)
            assert all("hit" in cache.split("; ") for _, _, _, cache in results)
        finally:
            stop(proc)
    finally:
        stop(origin_proc)


SMALL = {f"/w{i}.jpg": (2 * 1024 * 1024 + i * 977, 100 + i) for i in range(6)}


async def _fetch_checked(url: str, expected: dict[str, bytes]) -> tuple[int, int]:
    """Request every object twice concurrently; return (complete bodies, wrong bodies). A
    response cut by a kill raises in the client and counts as neither."""
    complete = wrong = 0
    async with aiohttp.ClientSession() as client:

        async def one(path: str) -> None:
            nonlocal complete, wrong
            try:
                async with client.get(url + path) as resp:
                    body = await resp.read()
            except (aiohttp.ClientError, ConnectionError):
                return
            if resp.status == 200 and body == expected[path]:
                complete += 1
            else:
                wrong += 1

        await asyncio.gather(*(one(p) for p in expected for _ in range(2)))
    return complete, wrong


@pytest.mark.long
async def test_fifty_rounds_of_sigkill_with_two_workers_serve_no_wrong_body(
    tmp_path: Path,
) -> None:
    expected = {path: pattern_bytes(size, seed) for path, (size, seed) in SMALL.items()}
    # About 0.2 s per fill (32 chunks, 5 ms apart): kills land in the middle of fills.
    origin_proc, origin_url = start_origin(SMALL, chunk_interval=0.005)
    cache_dir = tmp_path / "cache"
    rng = random.Random(50)
    wrong_total = complete_total = 0
    port = free_port()
    proc = start_pixcache(origin_url, cache_dir, port, "--workers", "2")
    try:
        for round_no in range(50):
            url = f"http://127.0.0.1:{port}"
            task = asyncio.ensure_future(_fetch_checked(url, expected))
            await asyncio.sleep(rng.uniform(0.02, 0.3))
            if round_no % 5 == 4:  # the whole process group, then a restart
                stop(proc, signal.SIGKILL)
            else:  # one worker; the master replaces it
                workers = wait_for_children(proc.pid, 2)
                os.kill(rng.choice(workers), signal.SIGKILL)
            complete, wrong = await task
            complete_total += complete
            wrong_total += wrong
            if proc.poll() is not None:
                port = free_port()
                proc = start_pixcache(origin_url, cache_dir, port, "--workers", "2")
            if (round_no + 1) % 10 == 0:
                # Whatever is on disk now, stored by whichever process, is whole.
                # Entries are purged so that the next rounds fill again.
                for entry in (cache_dir / "entries").glob("??/*"):
                    remove_entry(entry)
        complete, wrong = await _fetch_checked(f"http://127.0.0.1:{port}", expected)
        assert complete == len(expected) * 2
        assert wrong_total + wrong == 0
        assert complete_total > 0
    finally:
        stop(proc)
        stop(origin_proc)
    verify = run_python(["proxy", "verify", "--cache-dir", str(cache_dir)], cwd=REPO, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
