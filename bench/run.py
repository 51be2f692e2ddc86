"""pixcache benchmarks, run by hand (never by the test suite). See bench/README.md.

Three measurements, each against real processes on 127.0.0.1 only (the fake origin from
tests/fake_origin.py and `python -m proxy serve`), each bounded in count and time. The
scenarios live here; bench/probes.py holds what they are built from, bench/report.py the
summary.

  hits  hit requests/s and latency for 1 KiB, 100 KiB and 1 MiB objects (wrk)
  cold  N concurrent GETs of one cold key whose origin answers after a delay
  rss   peak RSS of pixcache while it proxies a 1 GiB object cold, then serves it as a hit

    python -m bench.run                       # everything (about 45 s)
    python -m bench.run --only cold,rss --json results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/run.py` as well as `python -m bench.run`
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from bench.probes import (  # noqa: E402
    GIB,
    KIB,
    MIB,
    BenchError,
    RssSampler,
    children_cpu,
    cpu_used,
    fetch_once,
    origin_hits,
    parse_wrk,
    proc_status,
    read_discarding,
    stack,
    tree_cpu_seconds,
    wait_for_commit,
)
from bench.report import machine, revision, size_text, summary  # noqa: E402
from tests.fake_origin import pattern_bytes  # noqa: E402

SCENARIOS = ("hits", "cold", "rss")
HIT_OBJECTS = {
    "/hit-1k.bin": (1 * KIB, 11),
    "/hit-100k.bin": (100 * KIB, 12),
    "/hit-1m.bin": (MIB, 13),
}
# Upper bounds, so a typo on the command line cannot turn into an unbounded load.
MAX_DURATION, MAX_CONNECTIONS, MAX_COLD_CLIENTS, MAX_RSS_SIZE = 60, 1024, 2000, 8 * GIB
MAX_COLD_SIZE = 16 * MIB  # every cold client holds the whole body in memory to compare it


# -- 1. hits -----------------------------------------------------------------------------


def bench_hits(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    extra = ("--workers", str(args.workers)) if args.workers > 1 else ()
    with stack(HIT_OBJECTS, work, "hits", extra=extra) as s:
        for stored, (path, (size, seed)) in enumerate(HIT_OBJECTS.items(), start=1):
            # Warm: one miss stores the entry; once it is committed, a hit proves it is
            # served from the cache. (The miss's client has all its bytes before the commit
            # is done, so a request sent at once may still join the fill as "collapsed".)
            expected = pattern_bytes(size, seed)
            status, body, cache = asyncio.run(fetch_once(s.url + path))
            if status != 200 or body != expected or "stored" not in cache:
                raise BenchError(f"warming {path}: {status}, {len(body)} B, {cache!r}")
            wait_for_commit(s.cache_dir, stored, 30)
            status, body, cache = asyncio.run(fetch_once(s.url + path))
            if status != 200 or body != expected or "hit" not in cache.split("; "):
                raise BenchError(f"hit on {path}: {status}, {len(body)} B, {cache!r}")
            cpu_before = tree_cpu_seconds(s.pixcache.pid)
            wrk_before = children_cpu()
            cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
            cmd += ["--latency", "--timeout", "5s", s.url + path]
            began = time.monotonic()
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=args.duration + 30, check=False
            )
            elapsed = time.monotonic() - began
            if done.returncode != 0:
                raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
            figures = parse_wrk(done.stdout)
            figures["size"] = size
            # Where the CPU went, in cores: pixcache is one process with one event loop; wrk
            # is the only child that ends during the run, so the children's delta is wrk's.
            pixcache_cpu = tree_cpu_seconds(s.pixcache.pid) - cpu_before
            figures["pixcache_cpu"] = round(pixcache_cpu / elapsed, 2)
            figures["wrk_cpu"] = round((children_cpu() - wrk_before) / elapsed, 2)
            figures["pixcache_cpu_us_per_request"] = round(
                pixcache_cpu / max(figures["requests"], 1) * 1e6
            )
            if figures["non_2xx"]:
                raise BenchError(f"{path}: {figures['non_2xx']} non-2xx hits:\n{done.stdout}")
            if figures["socket_errors"]:
                print(f"  warning: {path}: socket errors:\n{done.stdout}", file=sys.stderr)
            results[path] = figures
            print(
                f"  {path}: {figures['requests_per_s']:.0f} req/s, "
                f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms",
                file=sys.stderr,
            )
        hits = origin_hits(s.origin_url)
    for path in HIT_OBJECTS:
        results[path]["origin_requests"] = hits.get(path, 0)
    if any(hits.get(path, 0) != 1 for path in HIT_OBJECTS):
        raise BenchError(f"origin was not asked exactly once per object: {hits}")
    return {"objects": results}


# -- 2. cold key, many clients ---------------------------------------------------------


async def thundering_herd(url: str, clients: int) -> tuple[float, list[dict[str, Any]]]:
    """`clients` GETs at once, each on its own connection: how long until all were done,
    and what each got."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def one() -> dict[str, Any]:
            began = time.monotonic()
            async with client.get(url) as resp:
                first_byte = time.monotonic() - began
                body = await resp.read()
                return {
                    "status": resp.status,
                    "body": body,
                    "cache": resp.headers.get("Cache-Status", ""),
                    "first_byte": first_byte,
                    "total": time.monotonic() - began,
                }

        began = time.monotonic()
        got = await asyncio.gather(*(one() for _ in range(clients)), return_exceptions=True)
        wall = time.monotonic() - began
    failed = [r for r in got if isinstance(r, BaseException)]
    if failed:
        raise BenchError(f"{len(failed)} of {clients} requests failed, e.g. {failed[0]!r}")
    return wall, got  # type: ignore[return-value]


def bench_cold(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size, seed = args.cold_size, 21
    objects = {"/cold.bin": (size, seed), "/warm-up.bin": (KIB, 22)}
    expected = pattern_bytes(size, seed)
    with stack(objects, work, "cold", delay=args.cold_delay) as s:
        # One miss of another key first, so the measured one does not also pay for starting
        # pixcache's origin client (first connection, lazy imports).
        status, _, _ = asyncio.run(fetch_once(s.url + "/warm-up.bin"))
        if status != 200:
            raise BenchError(f"warm-up request got {status}")
        wait_for_commit(s.cache_dir, 1, 30)
        wall, got = asyncio.run(thundering_herd(s.url + "/cold.bin", args.cold_clients))
        hits = origin_hits(s.origin_url)
    bodies = Counter(r["body"] for r in got)
    outcomes = Counter(
        "hit"
        if "hit" in r["cache"].split("; ")
        else "collapsed"
        if "collapsed" in r["cache"]
        else "leader"
        for r in got
    )
    totals = sorted(r["total"] for r in got)
    result = {
        "clients": args.cold_clients,
        "size": size,
        "origin_delay_s": args.cold_delay,
        "origin_requests": hits.get("/cold.bin", 0),
        "wall_s": round(wall, 3),
        "statuses": dict(Counter(r["status"] for r in got)),
        "distinct_bodies": len(bodies),
        "all_bodies_correct": all(r["body"] == expected for r in got),
        "outcomes": dict(outcomes),
        "latency_min_s": round(totals[0], 3),
        "latency_p50_s": round(statistics.median(totals), 3),
        "latency_max_s": round(totals[-1], 3),
        "first_byte_min_s": round(min(r["first_byte"] for r in got), 3),
        "first_byte_max_s": round(max(r["first_byte"] for r in got), 3),
    }
    if (
        result["origin_requests"] != 1
        or not result["all_bodies_correct"]
        or result["statuses"] != {200: args.cold_clients}
    ):
        raise BenchError(f"cold key: {json.dumps(result)}")
    return result


# -- 3. RSS while proxying a large object cold ------------------------------------------


def bench_rss(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size = args.rss_size
    objects = {"/big.bin": (size, 31), "/small.bin": (KIB, 32)}
    mib = 1 / MIB
    with stack(objects, work, "rss") as s:
        pid = s.pixcache.pid
        idle = proc_status(pid)["VmRSS"]
        # One small miss and hit first: the first request's one-off costs (origin client,
        # executor threads, lazy imports) are not what invariant 5 is about.
        asyncio.run(fetch_once(s.url + "/small.bin"))
        wait_for_commit(s.cache_dir, 1, 30)
        asyncio.run(fetch_once(s.url + "/small.bin"))
        before = proc_status(pid)
        sampler = RssSampler(pid, args.sample_interval)
        sampler.start()
        cpu: dict[str, dict[str, float]] = {}
        try:
            time.sleep(0.2)
            sampler.phase = "cold"
            with cpu_used(cpu, "cold", s):
                count, length, cache, cold_s = asyncio.run(read_discarding(s.url + "/big.bin", 600))
            if count != size or length != size or "stored" not in cache:
                raise BenchError(f"cold read: {count} of {size} bytes, {length}, {cache!r}")
            sampler.phase = "commit"
            commit_s = wait_for_commit(s.cache_dir, 2, 300)
            sampler.phase = "hit"
            with cpu_used(cpu, "hit", s):
                hit_count, _, hit_cache, hit_s = asyncio.run(
                    read_discarding(s.url + "/big.bin", 600)
                )
            sampler.phase = "after"
            time.sleep(0.2)
        finally:
            sampler.stop()
        after = proc_status(pid)
        hits = origin_hits(s.origin_url)
        entry_size = max(p.stat().st_size for p in (s.cache_dir / "entries").glob("*/*"))
    if hit_count != size or "hit" not in hit_cache.split("; "):
        raise BenchError(f"second read: {hit_count} of {size} bytes, {hit_cache!r}")
    times = [t for t, _, _ in sampler.samples]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    peak = max(sampler.peak(p) for p in ("cold", "commit", "hit"))
    result = {
        "size": size,
        "rss_idle_mib": round(idle * mib, 1),
        "rss_before_mib": round(before["VmRSS"] * mib, 1),
        "rss_peak_mib": round(peak * mib, 1),
        "rss_rise_mib": round((peak - before["VmRSS"]) * mib, 1),
        "rss_peak_cold_mib": round(sampler.peak("cold") * mib, 1),
        "rss_peak_commit_mib": round(sampler.peak("commit") * mib, 1),
        "rss_peak_hit_mib": round(sampler.peak("hit") * mib, 1),
        "rss_after_mib": round(after["VmRSS"] * mib, 1),
        # The kernel's own high-water mark catches a peak between two samples. It covers
        # the whole life of the process, so its rise is an upper bound on ours.
        "vmhwm_before_mib": round(before["VmHWM"] * mib, 1),
        "vmhwm_after_mib": round(after["VmHWM"] * mib, 1),
        "vmhwm_rise_mib": round((after["VmHWM"] - before["VmRSS"]) * mib, 1),
        "samples": len(sampler.samples),
        "sample_gap_max_ms": round(max(gaps) * 1e3, 1) if gaps else None,
        "cold_s": round(cold_s, 2),
        "cold_mib_per_s": round(size * mib / cold_s),
        "commit_wait_s": round(commit_s, 2),
        "hit_s": round(hit_s, 2),
        "hit_mib_per_s": round(size * mib / hit_s),
        "cpu_seconds": cpu,
        "origin_requests": hits.get("/big.bin", 0),
        "entry_file_bytes": entry_size,
        "second_request": hit_cache,
    }
    if result["origin_requests"] != 1:
        raise BenchError(f"origin asked {result['origin_requests']} times for /big.bin")
    return result


# -- main --------------------------------------------------------------------------------


def _bounded(kind: type, low: float, high: float):
    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def _size_arg(limit: int):
    """A byte count with an optional binary suffix (100K, 1M, 1G, as the fake origin takes),
    between 1 B and `limit`."""

    def parse(text: str) -> int:
        text = text.strip().upper().removesuffix("IB").removesuffix("B")
        factor = {"K": KIB, "M": MIB, "G": GIB}.get(text[-1:], 1)
        try:
            value = int(text[:-1] if factor > 1 else text) * factor
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
        if not 0 < value <= limit:
            raise argparse.ArgumentTypeError(f"must be between 1 B and {size_text(limit)}")
        return value

    return parse


def _only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in SCENARIOS:
            raise argparse.ArgumentTypeError(f"{name!r}: expected {', '.join(SCENARIOS)}")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--only", type=_only, action="append", help="hits, cold, rss (comma list)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--duration", type=_bounded(int, 1, MAX_DURATION), default=10, help="wrk -d")
    p.add_argument("--connections", type=_bounded(int, 1, MAX_CONNECTIONS), default=64)
    p.add_argument("--threads", type=_bounded(int, 1, 16), default=2, help="wrk -t")
    p.add_argument(
        "--workers", type=_bounded(int, 1, 8), default=1, help="pixcache --workers (hits)"
    )
    p.add_argument("--cold-clients", type=_bounded(int, 1, MAX_COLD_CLIENTS), default=200)
    p.add_argument("--cold-size", type=_size_arg(MAX_COLD_SIZE), default=100 * KIB)
    p.add_argument("--cold-delay", type=_bounded(float, 0, 10), default=0.5)
    p.add_argument("--rss-size", type=_size_arg(MAX_RSS_SIZE), default=GIB)
    p.add_argument("--sample-interval", type=_bounded(float, 0.005, 1), default=0.02)
    p.add_argument(
        "--work-dir", type=Path, help="where cache dirs are made (default: system temp dir)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    selected = [n for n in SCENARIOS if args.only is None or n in sum(args.only, [])]
    if "hits" in selected and shutil.which("wrk") is None:
        print(
            "bench: wrk is not installed (or not on PATH); the hits benchmark needs it.\n"
            "  Debian/Ubuntu: apt-get update && apt-get install -y wrk\n"
            "  or run the others alone: python -m bench.run --only cold,rss",
            file=sys.stderr,
        )
        return 2
    runs = {"hits": bench_hits, "cold": bench_cold, "rss": bench_rss}
    results: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="pixcache-bench-", dir=args.work_dir))
    try:
        for name in selected:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            began, load_before = time.monotonic(), round(os.getloadavg()[0], 2)
            results[name] = runs[name](args, work)
            # Other work on the machine skews every figure; the 1-minute load average says
            # how much there was (this benchmark alone adds about 1-2 on top).
            results[name]["loadavg_1m"] = [load_before, round(os.getloadavg()[0], 2)]
            print(f"bench: {name} done in {time.monotonic() - began:.1f} s", file=sys.stderr)
    except (
        BenchError,
        OSError,
        RuntimeError,
        aiohttp.ClientError,
        subprocess.SubprocessError,
    ) as exc:
        # OSError includes TimeoutError, and a pixcache that died (its /proc entry is gone).
        print(f"bench: FAILED: {exc!r}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(summary(results))
    if args.json is not None:
        report = {
            "machine": machine(),
            "revision": revision(),
            "options": _options(args, selected),
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


def _options(args: argparse.Namespace, selected: list[str]) -> dict[str, Any]:
    options = {k: v for k, v in vars(args).items() if k not in ("only", "json", "work_dir")}
    return {"scenarios": selected, **options}


if __name__ == "__main__":
    sys.exit(main())
