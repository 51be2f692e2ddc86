"""An origin for bench/compare.py that answers every path under a prefix, so a load
generator can ask for a new key on every request (tests/fake_origin.py serves only the exact
paths it was given). aiohttp on uvloop, bodies built once and served from memory, 127.0.0.1
only.

    python -m bench.bulk_origin --route cold=102400:21 --route slow=102400:22:0.5

`--route NAME=SIZE:SEED[:DELAY]` answers GET /NAME/<anything> with pattern_bytes(SIZE, SEED)
after DELAY seconds. GET /_hits returns how many requests each route has had, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import uvloop
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fake_origin import pattern_bytes  # noqa: E402

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HOST = "127.0.0.1"  # loopback only: a benchmark helper is never reachable from the network


@dataclass(frozen=True)
class Route:
    size: int
    seed: int
    delay: float = 0.0

    def spec(self, name: str) -> str:
        return f"{name}={self.size}:{self.seed}:{self.delay}"


def _route(text: str) -> tuple[str, Route]:
    name, _, spec = text.partition("=")
    parts = spec.split(":")
    try:
        route = Route(int(parts[0]), int(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"expected NAME=SIZE:SEED[:DELAY], got {text!r}") from None
    if not name or "/" in name or route.size < 0 or not 0 <= route.delay <= 10:
        raise argparse.ArgumentTypeError(f"bad route {text!r}")
    return name, route


async def serve(port: int, routes: dict[str, Route]) -> None:
    bodies = {name: pattern_bytes(r.size, r.seed) for name, r in routes.items()}
    hits: collections.Counter[str] = collections.Counter()
    headers = {"Cache-Control": "max-age=3600", "Content-Type": "application/octet-stream"}

    async def answer(request: web.Request) -> web.Response:
        name = request.path.split("/", 2)[1]
        if name == "_hits":
            return web.json_response(dict(hits))
        route = routes.get(name)
        if route is None:
            raise web.HTTPNotFound()
        hits[name] += 1  # counted on arrival, before the delay
        if route.delay:
            await asyncio.sleep(route.delay)
        etag = f'"{name}-{route.size}-{route.seed}"'
        return web.Response(body=bodies[name], headers={**headers, "ETag": etag})

    await serve_until_stopped(answer, port)


async def serve_until_stopped(answer: Handler, port: int) -> None:
    """Answer every GET with `answer` on 127.0.0.1:`port` (0: any free port), print
    `READY PORT` once listening, and stop on SIGTERM or SIGINT."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print(f"READY {runner.addresses[0][1]}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def start(routes: dict[str, Route]) -> tuple[subprocess.Popen, str]:
    """This origin in a process of its own: (process, base URL)."""
    argv = [sys.executable, "-m", "bench.bulk_origin", "--port", "0"]
    for name, route in routes.items():
        argv += ["--route", route.spec(name)]
    return start_ready(argv)


def start_ready(argv: list[str]) -> tuple[subprocess.Popen, str]:
    """Start a helper that prints `READY PORT` once it listens: (process, base URL)."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"{argv[2]} did not start: {line!r}")
    return proc, f"http://{HOST}:{int(line.split()[1])}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--route", type=_route, action="append", default=[], metavar="SPEC")
    args = parser.parse_args()
    uvloop.run(serve(args.port, dict(args.route)))


if __name__ == "__main__":
    main()
