"""`--workers 2`: one origin request per key across both processes, and a worker that dies
mid-fill releases its claim, is replaced, and leaves no temp files."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp

from tests.fake_origin import pattern_bytes
from tests.system.procs import (
    REPO,
    free_port,
    start_origin,
    start_pixcache,
    stop,
    wait_for_children,
    wait_for_port,
)


async def _origin_hits(origin_url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as client:
        async with client.get(origin_url + "/_hits") as resp:
            return await resp.json()


async def test_200_concurrent_cold_requests_over_two_workers_make_one_origin_request(
    tmp_path: Path,
) -> None:
    size, seed = 512 * 1024, 21
    origin_proc, origin_url = start_origin({"/one.jpg": (size, seed)}, delay=0.5)
    port = free_port()
    log = tmp_path / "pixcache.log"
    proc = start_pixcache(origin_url, tmp_path / "cache", port, "--workers", "2", log=log)
    try:
        wait_for_children(proc.pid, 2)
        await all_listening(log, 2)
        # New connections each, so SO_REUSEPORT spreads them over both workers.
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as client:

            async def one() -> tuple[int, bytes]:
                async with client.get(f"http://127.0.0.1:{port}/one.jpg") as resp:
                    return resp.status, await resp.read()

            results = await asyncio.gather(*(one() for _ in range(200)))
        expected = pattern_bytes(size, seed)
        assert all(status == 200 and body == expected for status, body in results)
        assert (await _origin_hits(origin_url)).get("/one.jpg") == 1
    finally:
        stop(proc)
        stop(origin_proc)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    served_by = Counter(e.get("worker") for e in events if e.get("event") == "request")
    assert served_by[0] > 0 and served_by[1] > 0, served_by  # both workers took requests


async def test_worker_killed_mid_fill_is_replaced_and_the_next_request_fetches_again(
    tmp_path: Path,
) -> None:
    size, seed = 4 * 1024 * 1024, 5
    # About 3 s per fill: 64 chunks of 64 KiB, 50 ms apart.
    origin_proc, origin_url = start_origin({"/slow.jpg": (size, seed)}, chunk_interval=0.05)
    port = free_port()
    cache = tmp_path / "cache"
    proc = start_pixcache(origin_url, cache, port, "--workers", "2")
    try:
        workers = wait_for_children(proc.pid, 2)
        async with aiohttp.ClientSession() as client:
            resp = await client.get(f"http://127.0.0.1:{port}/slow.jpg")
            await resp.content.readexactly(100_000)  # the fill is under way
            assert [p for p in (cache / "tmp").iterdir()], "a fill in flight has a temp file"
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            try:
                await resp.read()
                raise AssertionError("a response cut by a crash must not look complete")
            except aiohttp.ClientPayloadError:
                pass
            resp.release()
            wait_for_children(proc.pid, 2, replacing=workers)
            wait_for_port(port, proc)
            # The dead worker's temp file was removed, its key lock released.
            assert list((cache / "tmp").iterdir()) == []
            async with client.get(f"http://127.0.0.1:{port}/slow.jpg") as again:
                assert again.status == 200
                assert await again.read() == pattern_bytes(size, seed)
        assert (await _origin_hits(origin_url)).get("/slow.jpg") == 2
    finally:
        stop(proc)
        stop(origin_proc)


def listening_workers(log: Path) -> set[int]:
    """The workers that logged that they listen."""
    lines = log.read_text().splitlines() if log.exists() else []
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return {e.get("worker") for e in events if e.get("event") == "listening"}


async def all_listening(log: Path, workers: int) -> None:
    """Wait until every worker has logged that it listens: the kernel spreads connections
    over the sockets listening at the time, so requests sent before the last one bound
    all go to the others (a bound of 20 s, not a pace)."""
    for _ in range(400):
        if listening_workers(log) == set(range(workers)):
            return
        await asyncio.sleep(0.05)
    assert listening_workers(log) == set(range(workers))


async def test_metrics_cover_both_workers(tmp_path: Path) -> None:
    """Whichever worker answers the scrape, the counts are those of both."""
    from prometheus_client.parser import text_string_to_metric_families

    origin_proc, origin_url = start_origin({"/m.jpg": (1000, 9)})
    port, admin_port = free_port(), free_port()
    log = tmp_path / "pixcache.log"
    proc = start_pixcache(
        origin_url,
        tmp_path / "cache",
        port,
        "--workers",
        "2",
        "--admin-listen",
        f"127.0.0.1:{admin_port}",
        log=log,
    )
    try:
        wait_for_children(proc.pid, 2)
        wait_for_port(admin_port, proc)
        await all_listening(log, 2)
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as client:
            for _ in range(40):
                async with client.get(f"http://127.0.0.1:{port}/m.jpg") as resp:
                    assert resp.status == 200
                    await resp.read()

            async def scraped_total() -> float:
                async with client.get(f"http://127.0.0.1:{admin_port}/metrics") as resp:
                    text = await resp.text()
                return sum(
                    sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                    if sample.name == "pixcache_requests_total"
                )

            # A request is recorded just after its last byte went out: give the last one a
            # moment, then every scrape, whichever worker answers it, must say 40.
            for _ in range(50):
                if await scraped_total() == 40:
                    break
                await asyncio.sleep(0.05)
            for _ in range(4):
                assert await scraped_total() == 40
    finally:
        stop(proc)
        stop(origin_proc)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    served_by = Counter(e.get("worker") for e in events if e.get("event") == "request")
    assert served_by[0] > 0 and served_by[1] > 0, served_by


async def test_a_master_killed_with_sigkill_has_its_metrics_directory_removed_next_start(
    tmp_path: Path,
) -> None:
    """With several workers, metrics are shared through a directory of the master's; a
    master that cannot clean up (SIGKILL) leaves it, and the next start removes it, but
    never the directory of a master that is alive (one whose lock is held)."""
    origin_proc, origin_url = start_origin({"/m.jpg": (1000, 9)})
    temp = tmp_path / "temp"
    temp.mkdir()
    alive = temp / "pixcache-metrics-alive"  # held by this process, as a master holds its own
    alive.mkdir()
    held = os.open(alive / ".owner", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)
    env = {"TMPDIR": str(temp)}
    args = (origin_url, tmp_path / "cache", free_port(), "--workers", "2")
    killed = restarted = None
    try:
        killed = start_pixcache(*args, env=env)
        first = [p for p in temp.iterdir() if p != alive]
        assert len(first) == 1 and first[0].name.startswith("pixcache-metrics-")
        stop(killed, signal.SIGKILL)
        assert first[0].is_dir()
        restarted = start_pixcache(*args[:2], free_port(), *args[3:], env=env)
        assert not first[0].exists() and alive.is_dir()
        assert len([p for p in temp.iterdir() if p != alive]) == 1  # the new master's
        stop(restarted)
        assert sorted(p.name for p in temp.iterdir()) == [alive.name]  # its own went at exit
    finally:
        for proc in (killed, restarted):
            if proc is not None:
                stop(proc, signal.SIGKILL)  # the whole process group, if still there
        stop(origin_proc)
        os.close(held)


async def test_sigterm_during_the_pause_after_a_worker_died_young_stops_the_master(
    tmp_path: Path,
) -> None:
    """A worker that dies within CRASH_LOOP_SECONDS of its start is replaced only after a
    pause; a SIGTERM that comes during the pause ends the master with exit 0, and no new
    worker is started to outlive it."""
    origin_proc, origin_url = start_origin({"/p.jpg": (1000, 5)})
    log = tmp_path / "pixcache.log"
    proc = start_pixcache(origin_url, tmp_path / "cache", free_port(), "--workers", "2", log=log)
    try:
        workers = wait_for_children(proc.pid, 2)
        os.kill(workers[0], signal.SIGKILL)  # younger than the crash-loop pause
        async with asyncio.timeout(10):  # the master reaped it: the pause has begun
            while '"worker_died"' not in log.read_text():
                await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        status = await loop.run_in_executor(None, proc.wait, 15)
        assert status == 0
    finally:
        stop(proc, signal.SIGKILL)
        stop(origin_proc)


def _catches_master_signals(pid: int) -> bool:
    """Whether `pid` has its handlers for SIGTERM and SIGHUP in place (the master sets
    SIGHUP's last, just before it starts its workers)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt")).split()[1], 16
    )
    return all(caught >> (sig - 1) & 1 for sig in (signal.SIGTERM, signal.SIGHUP))


async def test_sigterm_while_the_master_starts_its_workers_stops_every_process(
    tmp_path: Path,
) -> None:
    """A SIGTERM that comes as the master forks its workers (an orchestrator restarting
    it at once): every worker stops, and the master exits 0. Before, a worker forked just
    then was signalled by nobody, and the master waited for it forever."""
    loop = asyncio.get_running_loop()
    origin = tmp_path / "origin"
    origin.mkdir()
    for attempt in range(3):
        proc = subprocess.Popen(  # noqa: ASYNC220 - a start that must not wait for its port
            [sys.executable, "-m", "proxy", "serve", "--origin", f"file://{origin}"]
            + ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
            + ["--cache-dir", str(tmp_path / "cache"), "--workers", "4"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(20):
                while not _catches_master_signals(proc.pid):
                    await asyncio.sleep(0)
            proc.send_signal(signal.SIGTERM)
            status = await loop.run_in_executor(None, proc.wait, 15)
            assert status == 0, attempt
        finally:
            stop(proc, signal.SIGKILL)
