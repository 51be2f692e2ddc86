"""/metrics of a running `pixcache serve`, as Prometheus scrapes it: names that follow the
Prometheus conventions, the request duration histogram by cache outcome, build info,
limits, free disk and the fill queue, correct with one worker and with several."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.fake_origin import pattern_bytes
from tests.system.procs import (
    free_port,
    start_origin,
    start_pixcache,
    stop,
    wait_for_children,
    wait_for_port,
)

# Families prometheus-client itself adds in a single process; they follow its own rules.
LIBRARY_PREFIXES = ("process_", "python_")
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
# Prometheus wants base units: seconds, bytes. Anything else in a name is a mistake.
NOT_BASE_UNITS = {
    "milliseconds", "microseconds", "nanoseconds", "minutes", "hours", "days", "ms", "us",
    "ns", "millis", "kilobytes", "megabytes", "gigabytes", "kb", "mb", "gb", "kib", "mib",
    "gib", "bits", "percent",
}  # fmt: skip
SUFFIXES_OF_SAMPLES = ("_bucket", "_count", "_sum", "_created", "_total")


def check_conventions(text: str) -> dict[str, object]:
    """Assert the conventions on every family; return the families by name."""
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, family in families.items():
        if name.startswith(LIBRARY_PREFIXES):
            continue
        if name.endswith("_created") and name.removesuffix("_created") in families:
            continue  # the text format's creation time of a counter or histogram
        assert name.startswith("pixcache_"), name
        assert SNAKE_CASE.fullmatch(name), f"{name} is not snake_case"
        assert not set(name.split("_")) & NOT_BASE_UNITS, f"{name}: use base units"
        assert family.documentation, f"{name} has no HELP"
        assert not name.endswith(SUFFIXES_OF_SAMPLES), f"{name}: a reserved suffix"
        for sample in family.samples:
            # `_total` on counters and on nothing else.
            assert sample.name.endswith("_total") == (
                family.type == "counter" and not sample.name.endswith("_created")
            ), f"{sample.name} ({family.type})"
        if family.type == "histogram":
            assert name.endswith(("_seconds", "_bytes")), f"{name}: a histogram has a unit"
        if name.endswith("_info"):
            assert family.type == "gauge" and {s.value for s in family.samples} == {1.0}
        if "seconds" in name or "bytes" in name:
            assert name.endswith(("_seconds", "_bytes")), f"{name}: the unit goes last"
    return families


def values(families: dict[str, object], name: str) -> list[Sample]:
    family = families.get(name)
    assert family is not None, f"{name} is missing"
    return list(family.samples)  # type: ignore[attr-defined]


def total(families: dict[str, object], sample_name: str, **labels: str) -> float:
    family_name = re.sub(r"_(count|sum|bucket|total)$", "", sample_name)
    return sum(
        s.value
        for s in families.get(family_name, families.get(sample_name)).samples  # type: ignore[union-attr]
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def scrape(client: aiohttp.ClientSession, admin_port: int) -> str:
    async with client.get(f"http://127.0.0.1:{admin_port}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


@pytest.mark.parametrize("workers", [1, 2])
async def test_metrics_follow_the_conventions_and_count_every_request(
    tmp_path: Path, workers: int
) -> None:
    origin, origin_url = start_origin({"/m.jpg": (3000, 4)})
    port, admin_port = free_port(), free_port()
    limits = ("--max-size", "1G", "--max-object-size", "10M", "--max-fills", "7")
    proc = start_pixcache(
        origin_url,
        tmp_path / "cache",
        port,
        "--admin-listen",
        f"127.0.0.1:{admin_port}",
        "--workers",
        str(workers),
        *limits,
        log=tmp_path / "pixcache.log",  # JSON request lines: hits take the fast record
    )
    url = f"http://127.0.0.1:{port}/m.jpg"
    try:
        if workers > 1:
            wait_for_children(proc.pid, workers)
        wait_for_port(admin_port, proc)
        # One keep-alive connection (its later hits are this worker's hot hits), then
        # fresh connections that the kernel spreads over the workers.
        async with aiohttp.ClientSession() as client:
            for _ in range(10):
                async with client.get(url) as resp:
                    assert resp.status == 200 and await resp.read() == pattern_bytes(3000, 4)
        fresh = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=fresh) as client:
            for _ in range(10):
                async with client.get(url) as resp:
                    assert resp.status == 200 and await resp.read() == pattern_bytes(3000, 4)
            # A request is recorded just after its last byte went out: wait for the last.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                text = await scrape(client, admin_port)
                families = check_conventions(text)
                if total(families, "pixcache_request_duration_seconds_count") == 20:
                    break
                await asyncio.sleep(0.05)
            for _ in range(5):  # whichever worker answers the scrape
                families = check_conventions(await scrape(client, admin_port))
                seconds = "pixcache_request_duration_seconds_count"
                assert total(families, seconds, cache="hit") == 19
                assert total(families, seconds, cache="uri-miss") == 1
                buckets = "pixcache_request_duration_seconds_bucket"
                assert total(families, buckets, cache="hit", le="+Inf") == 19
                assert total(families, "pixcache_requests_total", cache="hit") == 19
                assert total(families, "pixcache_requests_total", cache="uri-miss") == 1
                assert total(families, "pixcache_body_bytes_total", source="cache") == 19 * 3000
                assert total(families, "pixcache_body_bytes_total", source="origin") == 3000

        [info] = values(families, "pixcache_build_info")
        assert info.value == 1 and info.labels["version"] and info.labels["python"]
        assert total(families, "pixcache_cache_max_bytes") == 1 << 30
        assert total(families, "pixcache_object_max_bytes") == 10 << 20
        assert total(families, "pixcache_fills_max") == 7 * workers
        assert total(families, "pixcache_fill_queue_max") == 256 * workers
        assert total(families, "pixcache_worker_processes") == workers
        assert total(families, "pixcache_client_connections_max") >= workers
        assert total(families, "pixcache_fill_queue_depth") == 0
        free = total(families, "pixcache_cache_filesystem_free_bytes")
        size = total(families, "pixcache_cache_filesystem_size_bytes")
        st = os.statvfs(tmp_path)
        assert 0 < free <= size == st.f_blocks * st.f_frsize
    finally:
        stop(proc)
        stop(origin)


async def test_fills_waiting_for_a_slot_show_as_the_fill_queue_depth(tmp_path: Path) -> None:
    """--max-fills 1 and an origin that holds every response until told: the second and
    third fill wait in the queue, and the gauge says so, then 0 once they ran."""
    release = asyncio.Event()
    arrived: list[str] = []

    async def held(request: web.Request) -> web.Response:
        arrived.append(request.path)
        await release.wait()
        return web.Response(body=b"x" * 100, headers={"Cache-Control": "max-age=60"})

    origin_app = web.Application()
    origin_app.router.add_get("/{name}", held)
    runner = web.AppRunner(origin_app)
    await runner.setup()
    origin_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", origin_port).start()
    port, admin_port = free_port(), free_port()
    proc = start_pixcache(
        f"http://127.0.0.1:{origin_port}",
        tmp_path / "cache",
        port,
        "--admin-listen",
        f"127.0.0.1:{admin_port}",
        "--max-fills",
        "1",
    )
    try:
        wait_for_port(admin_port, proc)
        async with aiohttp.ClientSession() as client:

            async def get(path: str) -> int:
                async with client.get(f"http://127.0.0.1:{port}{path}") as resp:
                    await resp.read()
                    return resp.status

            requests = [asyncio.ensure_future(get(f"/{n}.jpg")) for n in range(3)]

            async def depth() -> float:
                return total(
                    check_conventions(await scrape(client, admin_port)),
                    "pixcache_fill_queue_depth",
                )

            deadline = time.monotonic() + 20
            while await depth() != 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert await depth() == 2
            assert len(arrived) == 1  # one slot: one fill at the origin
            release.set()
            assert await asyncio.gather(*requests) == [200, 200, 200]
            assert await depth() == 0
            # Limits not set are left out, never reported as 0.
            families = check_conventions(await scrape(client, admin_port))
            assert "pixcache_cache_max_bytes" not in families
            assert "pixcache_object_max_bytes" not in families
            assert total(families, "pixcache_fills_max") == 1
    finally:
        stop(proc)
        await runner.cleanup()
