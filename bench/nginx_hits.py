"""Hits through nginx, run by hand: nginx forwarding every request to pixcache
(nginx/pixcache-front.conf) against nginx sending the hits' bodies itself
(nginx/pixcache-x-accel.conf, pixcache with --x-accel-redirect). Loopback only, bounded.

    python -m bench.nginx_hits                 # 100 KiB and 1 MiB objects, 10 s each
    python -m bench.nginx_hits --duration 5 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.probes import (  # noqa: E402
    KIB,
    MIB,
    BenchError,
    fetch_once,
    parse_wrk,
    stack,
    tree_cpu_seconds,
    wait_for_commit,
)
from tests.fake_origin import pattern_bytes  # noqa: E402
from tests.system.procs import free_port, stop, wait_for_port  # noqa: E402
from tests.system.test_nginx import nginx_args, render  # noqa: E402

OBJECTS = {"/hit-100k.bin": (100 * KIB, 12), "/hit-1m.bin": (MIB, 13)}
CONFIGS = {"front": "pixcache-front.conf", "x-accel": "pixcache-x-accel.conf"}
PREFIX = "/_pixcache/bodies/"


def _nginx(name: str, work: Path, cache_dir: Path, pixcache_port: int) -> tuple[Any, str]:
    tmp = Path(tempfile.mkdtemp(prefix=f"nginx-{name}-", dir=work))
    (tmp / "pixcache-cache").symlink_to(cache_dir)  # where render() points the alias
    port = free_port()
    conf = render(CONFIGS[name], tmp, port, [pixcache_port])
    proc = subprocess.Popen(nginx_args(tmp, conf), stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    return proc, f"http://127.0.0.1:{port}"


def _wrk(url: str, args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    cmd += ["--latency", "--timeout", "5s", url]
    began = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 30)
    if done.returncode != 0:
        raise BenchError(f"wrk failed: {done.stderr or done.stdout}")
    figures = parse_wrk(done.stdout)
    if figures["non_2xx"] or figures["socket_errors"]:
        raise BenchError(f"{url}: errors under load:\n{done.stdout}")
    return figures, time.monotonic() - began


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    extra = ("--x-accel-redirect", PREFIX)
    with stack(OBJECTS, work, "nginx", extra=extra) as s:
        pixcache_port = int(s.url.rsplit(":", 1)[1])
        for stored, (path, (size, seed)) in enumerate(OBJECTS.items(), start=1):
            status, body, _ = asyncio.run(fetch_once(s.url + path))
            if status != 200 or body != pattern_bytes(size, seed):
                raise BenchError(f"warming {path}: {status}")
            wait_for_commit(s.cache_dir, stored, 30)
        for name in CONFIGS:
            nginx, url = _nginx(name, work, s.cache_dir, pixcache_port)
            try:
                for path, (size, seed) in OBJECTS.items():
                    status, body, cache = asyncio.run(fetch_once(url + path))
                    if status != 200 or body != pattern_bytes(size, seed) or "hit" not in cache:
                        raise BenchError(f"{name} {path}: {status}, {len(body)} B, {cache!r}")
                    pix_before = tree_cpu_seconds(s.pixcache.pid)
                    nginx_before = tree_cpu_seconds(nginx.pid)
                    figures, elapsed = _wrk(url + path, args)
                    requests = max(figures["requests"], 1)
                    for who, pid, before in (
                        ("pixcache", s.pixcache.pid, pix_before),
                        ("nginx", nginx.pid, nginx_before),
                    ):
                        used = tree_cpu_seconds(pid) - before
                        figures[f"{who}_cpu"] = round(used / elapsed, 2)
                        figures[f"{who}_cpu_us_per_request"] = round(used / requests * 1e6)
                    results[f"{name} {path}"] = figures
                    print(
                        f"  {name} {path}: {figures['requests_per_s']:.0f} req/s, "
                        f"p99 {figures['p99_ms']} ms, pixcache "
                        f"{figures['pixcache_cpu_us_per_request']} us/req, nginx "
                        f"{figures['nginx_cpu_us_per_request']} us/req",
                        file=sys.stderr,
                    )
            finally:
                stop(nginx)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, choices=range(1, 61), default=10, metavar="1..60")
    p.add_argument("--connections", type=int, choices=range(1, 513), default=64, metavar="N")
    p.add_argument("--threads", type=int, choices=range(1, 9), default=2, metavar="N")
    p.add_argument("--json", type=Path, metavar="FILE")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pixcache-bench-") as work:
        results = run(args, Path(work))
    print(
        f"{'mode and object':28} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'pixcache us/req':>16} {'nginx us/req':>13}"
    )
    for label, f in results.items():
        print(
            f"{label:28} {f['requests_per_s']:>7.0f} {f['p50_ms']:>7} {f['p99_ms']:>7} "
            f"{f['pixcache_cpu_us_per_request']:>16} {f['nginx_cpu_us_per_request']:>13}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
