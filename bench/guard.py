"""Image guard and backpressure figures (run by hand; loopback only).

python -m bench.guard decode        # decode-mode cost per megapixel
python -m bench.guard bomb          # RSS while the 20000x20000 PNG bomb is refused
python -m bench.guard flood         # 500 concurrent distinct 10 MiB objects, 32 fills
python -m bench.guard probe         # header-probe cost per body, by chunk size
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pyvips

from bench.probes import proc_status
from proxy.guard import Guard, GuardLimits, ImageRejected, _decode
from tests.crafted_images import animation, jpeg_with_app_segments, png_header_bomb, sample
from tests.fake_origin import pattern_bytes
from tests.system.procs import free_port, start_origin, start_pixcache, stop

MIB = 1 << 20


def decode_cost() -> None:
    work = Path(tempfile.mkdtemp(prefix="pixcache-decode-"))
    try:
        for side in (1000, 2000, 4000):
            image = (pyvips.Image.xyz(side, side)[0] * 255 / side).cast("uchar")
            path = work / f"{side}.jpg"
            image.bandjoin([image, image]).write_to_file(str(path), Q=85)
            runs = []
            for _ in range(5):
                began = time.perf_counter()
                assert _decode(str(path)) == ""
                runs.append(time.perf_counter() - began)
            megapixels = side * side / 1e6
            best = min(runs)
            print(f"{side}x{side} JPEG ({megapixels:.0f} MP): {best * 1e3:.1f} ms, "
                  f"{best * 1e3 / megapixels:.2f} ms per megapixel")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_status(self.pid).get("VmRSS", 0))
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self.before = proc_status(self.pid).get("VmRSS", 0)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def _flood(url: str, count: int) -> Counter:
    outcomes: Counter = Counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one(i: int) -> None:
            async with client.get(f"{url}/big{i}") as resp:
                body = await resp.read()
                if resp.status == 200:
                    ok = body == pattern_bytes(10 * MIB, i)
                    outcomes["200 complete" if ok else "200 WRONG"] += 1
                else:
                    outcomes[str(resp.status)] += 1

        await asyncio.gather(*(one(i) for i in range(count)))
    return outcomes


def flood(count: int = 500) -> None:
    objects = {f"/big{i}": (10 * MIB, i) for i in range(count)}
    origin, origin_url = start_origin(objects)
    cache_dir = Path(tempfile.mkdtemp(prefix="pixcache-flood-"))
    port = free_port()
    proxy = start_pixcache(origin_url, cache_dir, port, "--max-fills", "32")
    try:
        with RssSampler(proxy.pid) as rss:
            began = time.monotonic()
            outcomes = asyncio.run(_flood(f"http://127.0.0.1:{port}", count))
            elapsed = time.monotonic() - began
        print(f"{count} concurrent distinct 10 MiB objects, --max-fills 32 (queue 256): "
              f"{dict(outcomes)} in {elapsed:.1f} s")  # fmt: skip
        print(f"RSS before {rss.before / MIB:.1f} MiB, peak {rss.peak / MIB:.1f} MiB")
    finally:
        stop(proxy)
        stop(origin)
        shutil.rmtree(cache_dir, ignore_errors=True)


def bomb() -> None:
    data = pyvips.Image.black(20000, 20000).cast("uchar").write_to_buffer(".png", bitdepth=1)
    work = Path(tempfile.mkdtemp(prefix="pixcache-bomb-"))
    (work / "bomb.png").write_bytes(data)
    port = free_port()
    proxy = start_pixcache(f"file://{work}", work / "cache", port)
    try:
        with RssSampler(proxy.pid) as rss:

            async def hit() -> list[int]:
                async with aiohttp.ClientSession() as client:
                    statuses = []
                    for _ in range(50):
                        async with client.get(f"http://127.0.0.1:{port}/bomb.png") as resp:
                            await resp.read()
                            statuses.append(resp.status)
                    return statuses

            statuses = asyncio.run(hit())
        print(f"PNG bomb ({len(data)} bytes, 20000x20000) x50: statuses {Counter(statuses)}")
        print(f"RSS before {rss.before / MIB:.1f} MiB, peak {rss.peak / MIB:.1f} MiB")
    finally:
        stop(proxy)
        shutil.rmtree(work, ignore_errors=True)


async def _inspect_once(guard: Guard, content_type: str, body: bytes, step: int) -> str:
    async def chunks() -> AsyncIterator[bytes]:
        for at in range(0, len(body), step):
            yield body[at : at + step]

    try:
        probe, rest = await guard.inspect(content_type, chunks())
    except ImageRejected:
        return "422"
    async for _ in rest:
        pass
    if probe is None:
        return "not an image"
    return probe.problem or f"{probe.width}x{probe.height}"


def probe_cost() -> None:
    """Time from the first chunk until the whole body went through the guard, in memory
    (no sockets): the cost of holding, joining and probing, and of the frame scan."""
    cases = [
        ("JPEG 7.6 KB", sample("gradient.jpg"), "image/jpeg"),
        ("PNG 211 KB", sample("gradient.png"), "image/png"),
        ("JPEG, SOF after 900 KB", jpeg_with_app_segments(sample("gradient.jpg"), 900_000), ""),
        ("JPEG, SOF after 100 KB", jpeg_with_app_segments(sample("gradient.jpg"), 100_000), ""),
        ("PNG bomb 60000x60000", png_header_bomb(60000, 60000), "image/jpeg"),
        ("GIF, 40 noise frames", animation(40, 128, noise=True), "image/gif"),
        ("WebP, 40 noise frames", animation(40, 220, noise=True, fmt=".webp"), "image/webp"),
        ("text 1 MiB", b"plain words, " * 80_660, "text/plain"),
    ]
    steps = [int(arg) for arg in sys.argv[2:]] or [65536, 1024, 1]

    async def run() -> None:
        guard = Guard(GuardLimits())
        try:
            for name, body, content_type in cases:
                for step in steps:
                    if step == 1 and len(body) > 200_000:
                        continue  # a million-step loop measures the generator, not the guard
                    runs = []
                    for _ in range(3):
                        began = time.perf_counter()
                        outcome = await _inspect_once(guard, content_type, body, step)
                        runs.append(time.perf_counter() - began)
                    print(f"{name:26} {step:>6}-byte chunks: {min(runs) * 1e3:9.2f} ms  {outcome}")
        finally:
            guard.close()

    asyncio.run(run())


if __name__ == "__main__":
    modes = {"decode": decode_cost, "flood": flood, "bomb": bomb, "probe": probe_cost}
    modes[sys.argv[1]]()
