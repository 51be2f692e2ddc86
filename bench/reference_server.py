"""The reference for hit benchmarks: a bare aiohttp server on uvloop that answers every GET of a
known path with its bytes from memory. No cache, no disk, no headers of ours: what one
aiohttp event loop can serve on this machine, so pixcache's figures can be given as a
fraction of it (a ratio that other load on a shared machine moves far less than req/s).

    python -m bench.reference_server --port 0 --gen /a.bin=51200:41
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvloop
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.bulk_origin import serve_until_stopped  # noqa: E402
from tests.fake_origin import pattern_bytes  # noqa: E402


def _object(text: str) -> tuple[str, bytes]:
    path, _, spec = text.partition("=")
    size, _, seed = spec.partition(":")
    if not path.startswith("/") or not size.isdigit():
        raise argparse.ArgumentTypeError(f"expected /PATH=SIZE:SEED, got {text!r}")
    return path, pattern_bytes(int(size), int(seed or 0))


async def serve(port: int, objects: dict[str, bytes]) -> None:
    async def answer(request: web.Request) -> web.Response:
        body = objects.get(request.path)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/octet-stream")

    await serve_until_stopped(answer, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--gen", type=_object, action="append", default=[], metavar="/P=SIZE:SEED")
    args = parser.parse_args()
    uvloop.run(serve(args.port, dict(args.gen)))


if __name__ == "__main__":
    main()
