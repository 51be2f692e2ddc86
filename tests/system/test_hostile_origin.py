"""`pixcache serve` against origins that do not play fair: an HTTP origin that sends an
endless body as fast as it can, a folder with a 20 GiB file, a folder where a file keeps
being swapped for a FIFO. Every fetch ends at --total-timeout, leaves no temp file, logs
the stage; the worker keeps answering and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.fast_origin import BLOCK, FastOrigin
from tests.system.procs import free_port, start_pixcache, stop

TOTAL = "1"  # --total-timeout, seconds: the origin streams as fast as it can till then
SETTLE_SECONDS = 10.0  # how long a fetch may take to end before the test calls it endless


def events(log: Path, name: str) -> list[dict]:
    lines = log.read_text().splitlines() if log.exists() else []
    found = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in found if e.get("event") == name]


def total_timeout_logged(log: Path) -> bool:
    return any(e.get("stage") == "total" for e in events(log, "origin_timeout"))


def no_temp_files(cache: Path) -> bool:
    return not any((cache / "tmp").iterdir())


async def until(condition: Callable[[], bool], seconds: float = SETTLE_SECONDS) -> float:
    loop = asyncio.get_running_loop()
    began = loop.time()
    while not condition():
        if loop.time() - began > seconds:
            raise AssertionError(f"still not true after {seconds} s")
        await asyncio.sleep(0.05)
    return loop.time() - began


async def fetch(url: str, client: str) -> None:
    """GET `url`; "reading" reads until the body is cut, "gone" leaves after one block."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            assert resp.status == 200
            if client == "gone":
                await resp.content.readexactly(BLOCK)
                resp.close()
                return
            with pytest.raises(aiohttp.ClientPayloadError):
                async with asyncio.timeout(SETTLE_SECONDS * 3):
                    async for _ in resp.content.iter_any():
                        pass


@pytest.mark.parametrize("client", ["reading", "gone"])
async def test_an_endless_fast_body_ends_at_the_total_deadline(tmp_path: Path, client: str) -> None:
    cache, log, port = tmp_path / "cache", tmp_path / "pixcache.log", free_port()
    async with FastOrigin(framing="chunked", max_seconds=60) as origin:
        proc = start_pixcache(origin.url, cache, port, "--total-timeout", TOTAL, log=log)
        try:
            loop = asyncio.get_running_loop()
            began = loop.time()
            await fetch(f"http://127.0.0.1:{port}/endless.bin", client)
            await until(lambda: origin.open_connections == 0 and no_temp_files(cache))
            await until(lambda: total_timeout_logged(log))
            print(f"fetch ended {loop.time() - began:.2f} s after the request")
        finally:
            stop(proc)
    assert origin.requests == 1


@pytest.mark.parametrize("client", ["reading", "gone"])
async def test_a_20_gib_file_ends_at_the_total_deadline(tmp_path: Path, client: str) -> None:
    root, cache, log, port = tmp_path / "root", tmp_path / "cache", tmp_path / "log", free_port()
    root.mkdir()
    with (root / "huge.bin").open("wb") as file:
        file.truncate(20 << 30)  # sparse: read as fast as memory goes
    (root / "ok.txt").write_bytes(b"fine\n")
    proc = start_pixcache(f"file://{root}", cache, port, "--total-timeout", TOTAL, log=log)
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await fetch(f"http://127.0.0.1:{port}/huge.bin", client)
        await until(lambda: total_timeout_logged(log) and no_temp_files(cache))
        print(f"fetch ended {loop.time() - began:.2f} s after the request")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/ok.txt") as resp:
                assert resp.status == 200 and await resp.read() == b"fine\n"
    finally:
        stop(proc)


def swap_file_and_fifo(path: Path, stop_swapping: threading.Event) -> None:
    """Replace `path` by a FIFO and back by a regular file, atomically, until told to
    stop (at most 20 000 times)."""
    fifo, regular = path.with_suffix(".fifo"), path.with_suffix(".regular")
    for turn in range(20_000):
        if stop_swapping.is_set():
            return
        if turn % 2:
            os.mkfifo(fifo)
            os.rename(fifo, path)
        else:
            regular.write_bytes(b"a regular file\n")
            os.rename(regular, path)


async def test_a_file_swapped_for_a_fifo_never_blocks_the_worker(tmp_path: Path) -> None:
    root, cache, port = tmp_path / "root", tmp_path / "cache", free_port()
    root.mkdir()
    (root / "ok.txt").write_bytes(b"fine\n")
    proc = start_pixcache(f"file://{root}", cache, port)
    stop_swapping = threading.Event()
    swapper = threading.Thread(target=swap_file_and_fifo, args=(root / "swap.jpg", stop_swapping))
    swapper.start()
    statuses: list[int] = []
    try:
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> tuple[int, bytes]:
                async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                    return resp.status, await resp.read()

            async with asyncio.timeout(60):  # a request blocked on the FIFO fails the test
                # A query each: every request is a miss. At least 50 batches, and on until
                # both the file and the FIFO were met (the swapper thread may be starved of
                # the CPU on a loaded machine), at most 500.
                for batch in range(500):
                    if batch >= 50 and {200, 404} <= set(statuses):
                        break
                    found = await asyncio.gather(*(get(f"/swap.jpg?{batch}-{n}") for n in range(4)))
                    for status, body in found:
                        assert (status, body) in ((200, b"a regular file\n"), (404, b"not found\n"))
                        statuses.append(status)
                stop_swapping.set()
                assert await get("/ok.txt") == (200, b"fine\n")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        stop_swapping.set()
        swapper.join()
        stop(proc)
    assert 404 in statuses and 200 in statuses  # both kinds really were met
