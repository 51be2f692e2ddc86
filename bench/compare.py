"""pixcache side by side with a bare aiohttp server and a real nginx, under the same load in
one run, so every figure the hit-path work aims at is a ratio of two figures measured
minutes apart on the same machine. Run by hand (never by the test suite); see
bench/README.md.

Targets, all started at once and loaded in turn (run 1 of every target, then run 2, ...):
  aiohttp               bench/reference_server.py: the same bytes from memory, no cache
  nginx                 proxy_cache in front of the origin (bench/nginx_cache.py)
  pixcache wN LEVEL     `python -m proxy serve --workers N --log-level LEVEL`, N = 1, 2
                        and LEVEL = warning, info (the default)
Scenarios (wrk; medians of --runs runs):
  hits   1 KiB, 100 KiB and 1 MiB hits: req/s and server CPU per request, RSS per worker
  cold   a new 100 KiB key on every request (nginx, pixcache w1 warning): req/s, CPU/miss
  herd   --herd-clients GETs at once of one cold key, origin delay --herd-delay: wall time

    .venv/bin/python -m bench.compare --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/compare.py` as well as `python -m bench.compare`
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from bench import bulk_origin, nginx_cache  # noqa: E402
from bench.bulk_origin import Route  # noqa: E402
from bench.compare_report import report  # noqa: E402
from bench.compare_runs import (  # noqa: E402
    Target,
    cold_run,
    herd_run,
    measure,
    median_of,
    rss,
    stored_entries,
    tmp_empty,
    warm,
)
from bench.probes import KIB, MIB, BenchError, origin_hits  # noqa: E402
from bench.report import machine, revision  # noqa: E402
from tests.fake_origin import pattern_bytes  # noqa: E402
from tests.system.procs import free_port, start_pixcache, stop, wait_for_children  # noqa: E402

SCENARIOS = ("hits", "cold", "herd")
HIT_ROUTES = {"1k": Route(KIB, 11), "100k": Route(100 * KIB, 12), "1m": Route(MIB, 13)}
COLD_ROUTE = Route(100 * KIB, 21)
PIXCACHE = [(1, "warning"), (2, "warning"), (1, "info"), (2, "info")]
# The pixcache the cold and herd runs load, and the ratios name.
MAIN = "pixcache w1 warning"


def hit_path(size: str) -> str:
    return f"/{size}/object.bin"


def start_targets(
    stack: ExitStack, args: argparse.Namespace, work: Path, origin_url: str
) -> list[Target]:
    """Every target, each a real process (tree) on 127.0.0.1, stopped when `stack` closes."""
    targets = []
    gen = [f"{hit_path(n)}={r.size}:{r.seed}" for n, r in HIT_ROUTES.items()]
    argv = [sys.executable, "-m", "bench.reference_server", "--port", "0"]
    proc, url = bulk_origin.start_ready([*argv, *(f"--gen={g}" for g in gen)])
    stack.callback(stop, proc)
    targets.append(Target("aiohttp", "aiohttp", proc.pid, url))

    origin_port = int(origin_url.rsplit(":", 1)[1])
    pid, url = stack.enter_context(
        nginx_cache.running(work / "nginx", origin_port, args.nginx_workers)
    )
    targets.append(Target("nginx", "nginx", pid, url, work / "nginx" / "cache"))

    for workers, level in PIXCACHE:
        name = f"pixcache w{workers} {level}"
        cache_dir = work / name.replace(" ", "-")
        port = free_port()
        extra = ("--workers", str(workers)) if workers > 1 else ()
        # At info, each request's log line goes to a file, as it would to a log collector.
        log = work / f"{cache_dir.name}.log" if level == "info" else None
        proc = start_pixcache(origin_url, cache_dir, port, *extra, log=log)
        stack.callback(stop, proc)
        if workers > 1:
            wait_for_children(proc.pid, workers)
        url = f"http://127.0.0.1:{port}"
        targets.append(Target(name, "pixcache", proc.pid, url, cache_dir, workers, level))
    return targets


def warm_all(targets: list[Target], origin_url: str) -> None:
    """Make every hit object a proven hit on every target. This runs whatever is selected:
    the cold and herd runs then find the caches' origin connections already open."""
    for t in targets:
        for size, route in HIT_ROUTES.items():
            warm(t, hit_path(size), pattern_bytes(route.size, route.seed))
    fetched_once(targets, origin_url)


def fetched_once(targets: list[Target], origin_url: str) -> None:
    """Each cache has fetched each hit object once: for its warming miss, and never since."""
    asked = origin_hits(origin_url)
    caches = sum(t.kind != "aiohttp" for t in targets)
    if any(asked.get(size, 0) != caches for size in HIT_ROUTES):
        raise BenchError(f"origin asked {asked} times; expected {caches} per object")


def bench_hits(args: argparse.Namespace, targets: list[Target], origin_url: str) -> dict[str, Any]:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {t.name: {} for t in targets}
    for run in range(1, args.runs + 1):
        for size in HIT_ROUTES:
            for t in targets:
                figures = measure(t, t.url + hit_path(size), args)
                runs[t.name].setdefault(size, []).append(figures)
                print(
                    f"  hits run {run} {size:>4} {t.name:20} {figures['requests_per_s']:8.0f} "
                    f"req/s {figures['cpu_us_per_request']:6} us/req",
                    file=sys.stderr,
                )
    fetched_once(targets, origin_url)  # every request of the runs was a hit
    return {
        t.name: {
            "kind": t.kind,
            "workers": t.workers,
            "log_level": t.log_level,
            "sizes": {size: median_of(r) for size, r in runs[t.name].items()},
            "rss": rss(t),
        }
        for t in targets
    }


def bench_cold(args: argparse.Namespace, targets: list[Target], origin_url: str) -> dict[str, Any]:
    expected = pattern_bytes(COLD_ROUTE.size, COLD_ROUTE.seed)
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    entries_before = {t.name: stored_entries(t) for t in targets}
    for run in range(1, args.runs + 1):
        for i, t in enumerate(targets):
            figures = cold_run(t, origin_url, args, f"t{i}r{run}", expected)
            runs[t.name].append(figures)
            print(
                f"  cold run {run} {t.name:20} {figures['requests_per_s']:8.0f} req/s "
                f"{figures['cpu_us_per_request']:6} us/miss",
                file=sys.stderr,
            )
    out = {}
    for t in targets:
        if t.kind == "pixcache" and t.cache_dir is not None:
            tmp_empty(t.cache_dir)
        out[t.name] = {
            **median_of(runs[t.name]),
            "misses": sum(r["origin_requests"] + 1 for r in runs[t.name]),  # + the check
            "entries_stored": stored_entries(t) - entries_before[t.name],
            "rss_after": rss(t),
        }
    return out


def bench_herd(args: argparse.Namespace, targets: list[Target], origin_url: str) -> dict[str, Any]:
    route = Route(COLD_ROUTE.size, COLD_ROUTE.seed + 1, args.herd_delay)
    expected = pattern_bytes(route.size, route.seed)
    walls: dict[str, list[float]] = {t.name: [] for t in targets}
    for run in range(1, args.runs + 1):
        for i, t in enumerate(targets):
            wall = herd_run(t, origin_url, args.herd_clients, f"/slow/t{i}r{run}.bin", expected)
            walls[t.name].append(round(wall, 3))
            print(f"  herd run {run} {t.name:20} {wall * 1e3:6.0f} ms", file=sys.stderr)
            time.sleep(0.5)  # let the herd's connections close before the next one
    return {
        name: {"wall_s": statistics.median(w), "walls_s": w, "clients": args.herd_clients}
        for name, w in walls.items()
    }


def _bounded(kind: type, low: float, high: float) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def _only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(f"{unknown}: expected {', '.join(SCENARIOS)}")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--only", type=_only, action="append", help="hits, cold, herd (comma list)")
    p.add_argument("--duration", type=_bounded(int, 1, 60), default=10, help="wrk -d, seconds")
    p.add_argument("--runs", type=_bounded(int, 1, 5), default=3, help="runs per figure")
    p.add_argument("--connections", type=_bounded(int, 1, 512), default=64, help="wrk -c")
    p.add_argument("--threads", type=_bounded(int, 1, 16), default=2, help="wrk -t")
    p.add_argument("--herd-clients", type=_bounded(int, 1, 1000), default=200)
    p.add_argument("--herd-delay", type=_bounded(float, 0, 10), default=0.5, help="seconds")
    p.add_argument("--nginx-workers", type=_bounded(int, 1, 8), default=1)
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--work-dir", type=Path, help="where caches and logs go (default: temp dir)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    selected = [n for n in SCENARIOS if args.only is None or n in sum(args.only, [])]
    if shutil.which("wrk") is None or nginx_cache.nginx_binary() is None:
        print(
            "bench: needs wrk and nginx (Debian: apt-get install wrk nginx-light)", file=sys.stderr
        )
        return 2
    work = Path(tempfile.mkdtemp(prefix="pixcache-compare-", dir=args.work_dir))
    routes = {**HIT_ROUTES, "cold": COLD_ROUTE}
    routes["slow"] = Route(COLD_ROUTE.size, COLD_ROUTE.seed + 1, args.herd_delay)
    results: dict[str, Any] = {}
    loads = [round(os.getloadavg()[0], 2)]
    try:
        with ExitStack() as stack:
            origin, origin_url = bulk_origin.start(routes)
            stack.callback(stop, origin)
            targets = start_targets(stack, args, work, origin_url)
            warm_all(targets, origin_url)
            if "hits" in selected:
                print("bench: hits ...", file=sys.stderr, flush=True)
                results["hits"] = bench_hits(args, targets, origin_url)
                loads.append(round(os.getloadavg()[0], 2))
            loaded = [t for t in targets if t.kind == "nginx" or t.name == MAIN]
            for name, run in (("cold", bench_cold), ("herd", bench_herd)):
                if name in selected:
                    print(f"bench: {name} ...", file=sys.stderr, flush=True)
                    results[name] = run(args, loaded, origin_url)
                    loads.append(round(os.getloadavg()[0], 2))
    except (
        BenchError,
        OSError,
        RuntimeError,
        aiohttp.ClientError,
        subprocess.SubprocessError,
    ) as exc:
        print(f"bench: FAILED: {exc!r}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    loads.append(round(os.getloadavg()[0], 2))
    print(report(results, MAIN, loads))
    if args.json is not None:
        options = {k: v for k, v in vars(args).items() if k not in ("only", "json", "work_dir")}
        out = {
            "machine": machine(),
            "revision": revision(),
            "options": {"scenarios": selected, **options},
            "loadavg_1m": loads,
            "results": results,
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
