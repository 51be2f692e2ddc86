"""What the benchmarks are built from: the processes under test, their counters in /proc,
wrk's output, and small HTTP clients. Everything talks to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.system.procs import children_of, free_port, start_origin, start_pixcache, stop

HOST = "127.0.0.1"  # every load targets loopback, and nothing else
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A benchmark could not run, or what it measured is wrong (a check failed)."""


# -- processes ---------------------------------------------------------------------------


@dataclass
class Stack:
    """A fake origin and a pixcache in front of it, each a real process."""

    origin: subprocess.Popen
    origin_url: str
    pixcache: subprocess.Popen
    url: str
    cache_dir: Path


@contextmanager
def stack(
    objects: dict[str, tuple[int, int]],
    work: Path,
    name: str,
    delay: float = 0.0,
    extra: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """Start origin + pixcache with a fresh cache dir; stop both and delete the dir after."""
    cache_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    origin, origin_url = start_origin(objects, delay=delay)
    pixcache = None
    try:
        port = free_port()
        pixcache = start_pixcache(origin_url, cache_dir, port, *extra)
        yield Stack(origin, origin_url, pixcache, f"http://{HOST}:{port}", cache_dir)
    finally:
        if pixcache is not None:
            stop(pixcache)
        stop(origin)
        shutil.rmtree(cache_dir, ignore_errors=True)


def origin_hits(origin_url: str) -> dict[str, int]:
    async def get() -> dict[str, int]:
        async with aiohttp.ClientSession() as client:
            async with client.get(origin_url + "/_hits", timeout=aiohttp.ClientTimeout(5)) as r:
                return await r.json()

    return asyncio.run(get())


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... of a process in bytes, from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name.startswith("Vm") and value.strip().endswith("kB"):
                out[name] = int(value.split()[0]) * KIB
    return out


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time a process (or one of its threads) has used, from fields 14
    and 15 of /proc/PID/stat (/proc/PID/task/TID/stat)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (a pixcache master and its workers)."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children_of(pid))


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(text: str) -> dict[str, Any]:
    """The figures we report from `wrk --latency` output; latencies in milliseconds."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, text, re.M)
        if match is None:
            raise BenchError(f"unexpected wrk output (no {pattern!r}):\n{text}")
        return match

    out: dict[str, Any] = {
        "requests": int(find(r"^\s*(\d+) requests in")[1]),
        "requests_per_s": float(find(r"^Requests/sec:\s+([\d.]+)")[1]),
        "transfer_per_s": find(r"^Transfer/sec:\s+(\S+)")[1],
    }
    for pct in ("50", "75", "90", "99"):
        m = find(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$")
        out[f"p{pct}_ms"] = round(float(m[1]) * _UNITS[m[2]], 3)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    out["socket_errors"] = sum(int(n) for n in errors.groups()) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(non2xx[1]) if non2xx else 0
    return out


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def fetch_once(url: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url, timeout=aiohttp.ClientTimeout(30)) as resp:
            return resp.status, await resp.read(), resp.headers.get("Cache-Status", "")


class RssSampler(threading.Thread):
    """Samples VmRSS of `pid` every `interval` seconds until stopped, marking phases."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, str, int]] = []
        self.phase = "before"
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic(), self.phase, proc_status(self.pid)["VmRSS"]))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def peak(self, phase: str) -> int:
        return max((rss for _, p, rss in self.samples if p == phase), default=0)


async def read_discarding(url: str, timeout: float) -> tuple[int, int | None, str, float]:
    """GET url, count the body's bytes and drop them: (count, Content-Length, Cache-Status,
    seconds)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as client:
        began = time.monotonic()
        async with client.get(url) as resp:
            if resp.status != 200:
                raise BenchError(f"GET {url}: status {resp.status}")
            count = 0
            async for chunk in resp.content.iter_any():
                count += len(chunk)
            return (
                count,
                resp.content_length,
                resp.headers.get("Cache-Status", ""),
                (time.monotonic() - began),
            )


@contextmanager
def cpu_used(out: dict[str, dict[str, float]], phase: str, s: Stack) -> Iterator[None]:
    """CPU seconds pixcache, the origin and this process (the client) used in the block."""
    pid = s.pixcache.pid
    # pixcache's main thread runs the event loop; the others are its executor threads
    # (temp-file writes, commits, entry opens).
    before = (cpu_seconds(pid), cpu_seconds(pid, pid), cpu_seconds(s.origin.pid))
    client = time.process_time()
    try:
        yield
    finally:
        total, loop = cpu_seconds(pid) - before[0], cpu_seconds(pid, pid) - before[1]
        out[phase] = {
            "pixcache": round(total, 2),
            "pixcache_loop": round(loop, 2),
            "pixcache_threads": round(max(total - loop, 0.0), 2),
            "origin": round(cpu_seconds(s.origin.pid) - before[2], 2),
            "client": round(time.process_time() - client, 2),
        }


def wait_for_commit(cache_dir: Path, entries: int, timeout: float) -> float:
    """Seconds until the cache holds `entries` entries and no temp file (fills committed)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        temps = list((cache_dir / "tmp").iterdir())
        if not temps and len(list((cache_dir / "entries").glob("*/*"))) >= entries:
            return time.monotonic() - began
        time.sleep(0.01)
    raise BenchError(f"fewer than {entries} committed entries after {timeout} s")
