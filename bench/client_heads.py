"""Resident memory of `pixcache serve` while clients send oversized request heads.

Each request carries about 1 MB of header fields (125 fields of 8000 bytes) and asks for
`Connection: close`; a few run at once. The figure is pixcache's VmRSS before the first
request, after the last one, and again a moment later. Run by hand:

    .venv/bin/python -m bench.client_heads --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from tests.system.procs import free_port, start_origin, start_pixcache, stop

FIELDS = 125
FIELD_BYTES = 8000  # under aiohttp's default per-field limit (8190)
MAX_REQUESTS = 2000
RUN_SECONDS = 120.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def big_head() -> bytes:
    filler = b"a" * FIELD_BYTES
    fields = b"".join(b"X-Filler-%d: %s\r\n" % (n, filler) for n in range(FIELDS))
    return b"GET /x.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"Connection: close\r\n\r\n"


async def one_request(port: int, head: bytes) -> int:
    """The status pixcache answered with (0: the connection closed without one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(10):
            try:
                writer.write(head)
                await writer.drain()
            except ConnectionError:
                pass  # refused part-way: the answer, if any, is still readable
            try:
                data = await reader.read(-1)
            except ConnectionError:
                data = b""
    finally:
        writer.close()
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0


async def run(port: int, requests: int, parallel: int) -> dict[int, int]:
    head = big_head()
    statuses: dict[int, int] = {}
    slots = asyncio.Semaphore(parallel)
    deadline = time.monotonic() + RUN_SECONDS

    async def guarded() -> None:
        async with slots:
            if time.monotonic() > deadline:
                return
            status = await one_request(port, head)
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(guarded() for _ in range(requests)))
    return statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--parallel", type=int, default=10)
    args = parser.parse_args()
    requests = min(args.requests, MAX_REQUESTS)
    origin, origin_url = start_origin({"/x.jpg": (1000, 1)})
    port = free_port()
    try:
        with tempfile.TemporaryDirectory() as cache:
            proxy = start_pixcache(origin_url, Path(cache) / "cache", port)
            try:
                before = rss_mib(proxy.pid)
                statuses = asyncio.run(run(port, requests, args.parallel))
                after = rss_mib(proxy.pid)
                time.sleep(2)  # a bench, not a test: let freed memory settle, then look again
                settled = rss_mib(proxy.pid)
            finally:
                stop(proxy)
    finally:
        stop(origin)
    print(
        f"{requests} requests with {FIELDS * FIELD_BYTES // 1024} KiB heads: "
        f"statuses {statuses}; RSS {before:.0f} MiB before, {after:.0f} MiB after, "
        f"{settled:.0f} MiB 2 s later"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
