"""`--max-size 100M` while 1 GiB of distinct objects is requested: the entries never take
more than 100 MiB plus the object in flight, and a hot set that fits stays cached.

    python -m bench.max_size [--objects 128] [--size 8M]

Loopback only; the cache directory is removed afterwards."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

import aiohttp

from tests.fake_origin import pattern_bytes
from tests.system.procs import free_port, start_origin, start_pixcache, stop

MIB = 1 << 20


def entries_bytes(cache_dir: Path) -> int:
    return sum(p.stat().st_size for p in (cache_dir / "entries").glob("??/*") if p.is_file())


async def run(objects: int, size: int, max_size: str) -> None:
    cold = {f"/cold{i}.bin": (size, i) for i in range(objects)}
    hot = {f"/hot{i}.bin": (size // 4, 1000 + i) for i in range(3)}
    origin, origin_url = start_origin({**cold, **hot})
    cache_dir = Path(tempfile.mkdtemp(prefix="pixcache-maxsize-"))
    port = free_port()
    proxy = start_pixcache(origin_url, cache_dir, port, "--max-size", max_size)
    url = f"http://127.0.0.1:{port}"
    peak = 0
    hot_hits = hot_requests = 0
    try:
        async with aiohttp.ClientSession() as client:
            for i, (path, (n, seed)) in enumerate(cold.items()):
                async with client.get(url + path) as resp:
                    assert await resp.read() == pattern_bytes(n, seed)
                for hot_path in hot:
                    async with client.get(url + hot_path) as resp:
                        await resp.read()
                        hot_requests += 1
                        hot_hits += "hit" in resp.headers["Cache-Status"].split("; ")
                peak = max(peak, entries_bytes(cache_dir))
                if i % 16 == 15:
                    print(f"{i + 1} objects: entries {entries_bytes(cache_dir) / MIB:.1f} MiB")
    finally:
        stop(proxy)
        stop(origin)
        shutil.rmtree(cache_dir, ignore_errors=True)
    print(f"requested {objects * size / MIB:.0f} MiB of distinct objects")
    print(f"peak size of the entries: {peak / MIB:.1f} MiB (limit {max_size})")
    print(f"hot set: {hot_hits} hits of {hot_requests} requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=128)
    parser.add_argument("--size", type=int, default=8 * MIB)
    parser.add_argument("--max-size", default="100M")
    args = parser.parse_args()
    if not 1 <= args.objects <= 1024 or not 1 <= args.size <= 64 * MIB:
        parser.error("--objects 1..1024 and --size up to 64 MiB")
    asyncio.run(run(args.objects, args.size, args.max_size))


if __name__ == "__main__":
    main()
