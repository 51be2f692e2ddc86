"""What the hit's checksum check costs (--verify-on-hit-max-size), run by hand.

For a ~50 KiB and a 1 MiB object, wrk measures hits/s of three servers on 127.0.0.1, each a
real process: the bare aiohttp reference (bench/reference_server.py, bytes from memory),
pixcache with the check off (`--verify-on-hit-max-size 0`: sendfile, size check) and
pixcache with the check on (the default, 1M: read + SHA-256 in the lookup's thread call,
the checked bytes written). Each round runs all of them back to back, in rotating order;
pixcache's figures are reported as a ratio to the reference of the same round, which the
other load of a shared machine moves much less than req/s. The scrubber is off in both
pixcache processes, so that only the hits read.

It also times the lookup alone (open_entry, in one thread, without a server), with and
without the check.

    python -m bench.hit_check                       # 3 rounds of 8 s per run (about 2.5 min)
    python -m bench.hit_check --rounds 1 --duration 3 --json hit_check.json
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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.bulk_origin import start_ready  # noqa: E402
from bench.probes import (  # noqa: E402
    KIB,
    MIB,
    BenchError,
    fetch_once,
    origin_hits,
    parse_wrk,
    stack,
    tree_cpu_seconds,
    wait_for_commit,
)
from bench.report import machine, revision  # noqa: E402
from storage.layout import Layout  # noqa: E402
from storage.lookup import open_entry  # noqa: E402
from tests.entries import commit  # noqa: E402
from tests.fake_origin import pattern_bytes  # noqa: E402
from tests.system.procs import stop  # noqa: E402

OBJECTS = {"/hit-50k.bin": (50 * KIB, 51), "/hit-1m.bin": (MIB, 52)}
MODES = {"check off": ("--verify-on-hit-max-size", "0"), "check on": ()}
MAX_DURATION, MAX_ROUNDS, MAX_CONNECTIONS = 60, 10, 1024


def start_reference() -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "bench.reference_server", "--port", "0"]
    for path, (size, seed) in OBJECTS.items():
        args += ["--gen", f"{path}={size}:{seed}"]
    return start_ready(args)


def warm(url: str, cache_dir: Path) -> None:
    """Each object: a miss that stores it, the commit, then a hit with the right bytes."""
    for stored, (path, (size, seed)) in enumerate(OBJECTS.items(), start=1):
        expected = pattern_bytes(size, seed)
        status, body, cache = asyncio.run(fetch_once(url + path))
        if status != 200 or body != expected:
            raise BenchError(f"warming {path}: {status}, {len(body)} B, {cache!r}")
        wait_for_commit(cache_dir, stored, 30)
        status, body, cache = asyncio.run(fetch_once(url + path))
        if status != 200 or body != expected or "hit" not in cache.split("; "):
            raise BenchError(f"hit on {path}: {status}, {len(body)} B, {cache!r}")


def run_wrk(args: argparse.Namespace, url: str, pid: int) -> dict[str, Any]:
    cpu_before = tree_cpu_seconds(pid)
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    cmd += ["--latency", "--timeout", "5s", url]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=args.duration + 30, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    figures = parse_wrk(done.stdout)
    if figures["non_2xx"] or figures["socket_errors"]:
        raise BenchError(f"{url}: errors under load:\n{done.stdout}")
    cpu = tree_cpu_seconds(pid) - cpu_before
    figures["cpu_us_per_request"] = round(cpu / max(figures["requests"], 1) * 1e6)
    return figures


def bench_servers(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {p: {} for p in OBJECTS}
    with ExitStack() as servers:
        reference, reference_url = start_reference()
        servers.callback(stop, reference)
        targets = {"reference": (reference_url, reference.pid)}
        stacks = {}
        for mode, extra in MODES.items():
            s = servers.enter_context(
                stack(OBJECTS, work, mode.replace(" ", "-"), extra=("--scrub-rate", "0", *extra))
            )
            warm(s.url, s.cache_dir)
            stacks[mode] = s
            targets[mode] = (s.url, s.pixcache.pid)
        names = list(targets)
        for round_no in range(args.rounds):
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            for path in OBJECTS:
                for name in order:
                    url, pid = targets[name]
                    figures = run_wrk(args, url + path, pid)
                    runs[path].setdefault(name, []).append(figures)
                    print(
                        f"  round {round_no + 1} {path} {name}: "
                        f"{figures['requests_per_s']:.0f} req/s",
                        file=sys.stderr,
                    )
        for mode, s in stacks.items():
            hits = origin_hits(s.origin_url)
            if any(hits.get(path, 0) != 1 for path in OBJECTS):
                raise BenchError(f"{mode}: origin not asked exactly once per object: {hits}")
    return {path: summarize(by_name) for path, by_name in runs.items()}


def summarize(by_name: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    reference = [r["requests_per_s"] for r in by_name["reference"]]
    out: dict[str, Any] = {}
    for name, figures in by_name.items():
        rates = [r["requests_per_s"] for r in figures]
        ratios = [rate / ref for rate, ref in zip(rates, reference, strict=True)]
        out[name] = {
            "requests_per_s": rates,
            "median_requests_per_s": round(statistics.median(rates)),
            "ratio_to_reference": round(statistics.median(ratios), 3),
            "cpu_us_per_request": round(
                statistics.median(r["cpu_us_per_request"] for r in figures)
            ),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in figures), 1),
        }
    return out


def lookup_cost(work: Path, calls: int = 2000) -> dict[str, dict[str, float]]:
    """µs per open_entry call on a page-cached entry, with and without the check."""
    layout = Layout(Path(tempfile.mkdtemp(prefix="lookup-", dir=work)))
    layout.create()
    out: dict[str, dict[str, float]] = {}
    for path, (size, seed) in OBJECTS.items():
        head = asyncio.run(commit(layout, pattern_bytes(size, seed), key=path))
        out[path] = {}
        for label, check_max in (("check off", 0), ("check on", size)):
            best = float("inf")
            for _ in range(3):
                began = time.perf_counter()
                for _ in range(calls):
                    entry = open_entry(head, check_max)
                    assert entry is not None
                    os.close(entry.fd)
                best = min(best, (time.perf_counter() - began) / calls)
            out[path][label] = round(best * 1e6, 1)
    return out


def _bounded(low: int, high: int):
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.hit_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=_bounded(1, MAX_DURATION), default=8, help="wrk -d")
    p.add_argument("--rounds", type=_bounded(1, MAX_ROUNDS), default=3)
    p.add_argument("--connections", type=_bounded(1, MAX_CONNECTIONS), default=64)
    p.add_argument("--threads", type=_bounded(1, 16), default=2)
    p.add_argument("--json", type=Path, metavar="FILE")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="pixcache-hitcheck-"))
    try:
        results = {"lookup_us": lookup_cost(work), "hits": bench_servers(args, work)}
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        print(f"bench: FAILED: {exc!r}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render(results))
    if args.json is not None:
        options = {**vars(args), "json": str(args.json)}
        report = {"machine": machine(), "revision": revision(), "options": options}
        args.json.write_text(json.dumps({**report, "results": results}, indent=2) + "\n")
    return 0


def render(results: dict[str, Any]) -> str:
    lines = ["| object | server | req/s (median) | ratio to reference | CPU/req | p99 |"]
    lines.append("|---|---|---|---|---|---|")
    for path, by_name in results["hits"].items():
        for name, f in by_name.items():
            lines.append(
                f"| {path} | {name} | {f['median_requests_per_s']} | "
                f"{f['ratio_to_reference']:.2f} | {f['cpu_us_per_request']} µs | {f['p99_ms']} ms |"
            )
    lines.append("")
    lines.append("| object | open_entry, check off | open_entry, check on |")
    lines.append("|---|---|---|")
    for path, cost in results["lookup_us"].items():
        lines.append(f"| {path} | {cost['check off']} µs | {cost['check on']} µs |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
