"""The measurements of bench/compare.py, one function per kind of run: warm a hit, run wrk
against a target and charge the target's CPU to the requests it answered, the cold-miss
run with a new key per request, the herd of GETs for one cold key, and RSS per worker."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.probes import MIB, BenchError, origin_hits, parse_wrk, proc_status, tree_cpu_seconds
from bench.probes import wait_for_commit as wait_for_entries
from bench.run import thundering_herd
from tests.system.procs import children_of

LUA = Path(__file__).resolve().with_name("unique_paths.lua")


@dataclass
class Target:
    """One server under load: the root of its process tree and where it listens."""

    name: str
    kind: str  # "aiohttp", "nginx" or "pixcache"
    pid: int
    url: str
    cache_dir: Path | None = None  # pixcache's cache dir, nginx's proxy_cache_path
    workers: int = 1
    log_level: str | None = None
    stored: int = 0  # pixcache: entries committed so far


async def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url, timeout=aiohttp.ClientTimeout(30)) as resp:
            return resp.status, await resp.read(), dict(resp.headers)


def get(url: str) -> tuple[int, bytes, dict[str, str]]:
    return asyncio.run(_get(url))


def _is_hit(t: Target, headers: dict[str, str]) -> bool:
    if t.kind == "pixcache":
        return "hit" in headers.get("Cache-Status", "").split("; ")
    if t.kind == "nginx":
        return headers.get("X-Cache-Status") == "HIT"
    return True  # the bare server has nothing but "hits"


def warm(t: Target, path: str, expected: bytes) -> None:
    """Make `path` a hit on `t`, and prove it: the next answer is a hit with the right bytes.
    A pixcache miss must store the entry; its client has every byte before the commit is
    done, so wait for the commit before asking again."""
    status, body, headers = get(t.url + path)
    if status != 200 or body != expected:
        raise BenchError(f"{t.name} {path}: {status}, {len(body)} B")
    if t.kind == "pixcache":
        if "stored" not in headers.get("Cache-Status", ""):
            raise BenchError(f"{t.name} {path}: not stored: {headers.get('Cache-Status')!r}")
        assert t.cache_dir is not None
        t.stored += 1
        wait_for_entries(t.cache_dir, t.stored, 30)
    for _ in range(50):  # nginx renames its temp file a moment after the response
        status, body, headers = get(t.url + path)
        if _is_hit(t, headers):
            break
        time.sleep(0.1)
    else:
        raise BenchError(f"{t.name} {path}: never a hit: {headers}")
    if status != 200 or body != expected:
        raise BenchError(f"{t.name} {path}: hit with {status}, {len(body)} B")


def wrk(url: str, args: argparse.Namespace, script_args: tuple[str, ...] = ()) -> dict[str, Any]:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    cmd += ["--latency", "--timeout", "5s"]
    if script_args:
        cmd += ["-s", str(LUA), url, "--", *script_args]
    else:
        cmd.append(url)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 30)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    figures = parse_wrk(done.stdout)
    if figures["non_2xx"]:
        raise BenchError(f"{url}: {figures['non_2xx']} non-2xx answers:\n{done.stdout}")
    if figures["socket_errors"]:
        print(f"  warning: {url}: socket errors:\n{done.stdout}", file=sys.stderr)
    return figures


def measure(
    t: Target,
    url: str,
    args: argparse.Namespace,
    script_args: tuple[str, ...] = (),
    settle: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One wrk run. The target's CPU (utime + stime of its process tree, from /proc) is
    divided by the requests wrk saw answered. `settle` waits for work the run left behind
    (pixcache's commits), so that its CPU is charged to the run too."""
    before = tree_cpu_seconds(t.pid)
    began = time.monotonic()
    figures = wrk(url, args, script_args)
    elapsed = time.monotonic() - began
    if settle is not None:
        settle()
    used = tree_cpu_seconds(t.pid) - before
    figures["server_cores"] = round(used / elapsed, 2)
    figures["cpu_us_per_request"] = round(used / max(figures["requests"], 1) * 1e6)
    return figures


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs (medians taken separately), and the runs."""
    keys = ("requests_per_s", "cpu_us_per_request", "server_cores", "p50_ms", "p99_ms")
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 2) for k in keys}
    out["runs"] = runs
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss(t: Target) -> dict[str, Any]:
    """VmRSS of the serving processes (and of the master, if there is one), in MiB."""
    children = children_of(t.pid)
    if t.kind == "nginx":  # not the cache manager and cache loader
        children = [c for c in children if "worker process" in _cmdline(c)]
    serving = children or [t.pid]
    return {
        "master_mib": round(proc_status(t.pid)["VmRSS"] / MIB, 1) if children else None,
        "workers_mib": [round(proc_status(pid)["VmRSS"] / MIB, 1) for pid in serving],
    }


def tmp_empty(cache_dir: Path, timeout: float = 60) -> None:
    """Wait until pixcache has committed (or dropped) every fill: no temp file left."""
    deadline = time.monotonic() + timeout
    while any((cache_dir / "tmp").iterdir()):
        if time.monotonic() > deadline:
            raise BenchError(f"temp files still in {cache_dir / 'tmp'} after {timeout} s")
        time.sleep(0.05)


def stored_entries(t: Target) -> int:
    """Entries in the cache: pixcache's heads, nginx's cache files (both one per key)."""
    assert t.cache_dir is not None
    if t.kind == "pixcache":
        return sum(1 for _ in (t.cache_dir / "entries").glob("*/*"))
    return sum(1 for p in t.cache_dir.glob("*/*/*") if len(p.name) == 32)


def cold_run(
    t: Target, origin_url: str, args: argparse.Namespace, tag: str, expected: bytes
) -> dict[str, Any]:
    """wrk with a new key on every request: every answer is a miss the target fetches from
    the origin and stores. Checked: one such key's bytes, and that the origin was asked at
    least once per answer (no request was a hit), and not more often than answers plus
    the requests still in flight when wrk stopped."""
    status, body, _ = get(f"{t.url}/cold/{tag}-check.bin")
    if status != 200 or body != expected:
        raise BenchError(f"{t.name} cold check: {status}, {len(body)} B")
    asked_before = origin_hits(origin_url).get("cold", 0)
    settle = (lambda: tmp_empty(t.cache_dir)) if t.kind == "pixcache" and t.cache_dir else None
    figures = measure(t, t.url, args, (f"/cold/{tag}-",), settle)
    asked = origin_hits(origin_url).get("cold", 0) - asked_before
    figures["origin_requests"] = asked
    if not figures["requests"] <= asked <= figures["requests"] + args.connections:
        raise BenchError(f"{t.name}: {figures['requests']} answers, origin asked {asked} times")
    return figures


def herd_run(t: Target, origin_url: str, clients: int, path: str, expected: bytes) -> float:
    """`clients` GETs of one cold key at once, each on its own connection; the wall time
    until all are complete. Checked: every body right, and one origin request."""
    asked_before = origin_hits(origin_url).get("slow", 0)
    wall, got = asyncio.run(thundering_herd(t.url + path, clients))
    asked = origin_hits(origin_url).get("slow", 0) - asked_before
    wrong = [r for r in got if r["status"] != 200 or r["body"] != expected]
    if wrong or asked != 1:
        raise BenchError(f"{t.name} herd: {len(wrong)} wrong answers, origin asked {asked}")
    return wall
