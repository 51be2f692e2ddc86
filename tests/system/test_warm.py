"""Warm-up against a real `pixcache serve` and a loopback image service, driven by
`pixcache warm FILE` as an operator runs it: every listed path is then a hit with one origin
request each; the origin never sees more requests at once than --warm-concurrency; a bad
line is named by file and line; the hot set survives a warm-up larger than the store; a
soft-purged entry counts as cached unless --refresh asks to revalidate it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.image_service_origin import ImageService, body_for
from tests.system.procs import REPO, free_port, start_pixcache, stop, wait_for_port
from tests.zygote import run_python

TOKEN = "warm-up-admin-token-0123"


class Instance:
    def __init__(self, service: ImageService, tmp_path: Path, *extra: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.proc = start_pixcache(
            service.url,
            tmp_path / "cache",
            self.port,
            "--admin-listen",
            f"127.0.0.1:{self.admin_port}",
            "--admin-token",
            TOKEN,
            *extra,
        )
        self.tmp_path = tmp_path
        wait_for_port(self.admin_port, self.proc)  # it opens after the serving listener

    async def get(self, path: str) -> str:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{self.port}{path}") as resp:
                assert resp.status == 200
                assert await resp.read() == body_for(path)
                return resp.headers["Cache-Status"]

    async def warm(self, lines: list[str], *args: str) -> subprocess.CompletedProcess[str]:
        listing = self.tmp_path / "warm.txt"
        listing.write_text("\n".join(lines) + "\n")
        env = {**os.environ, "PIXCACHE_ADMIN_TOKEN": TOKEN}
        command = ["proxy", "warm", str(listing), *args]
        command += ["--instances", f"127.0.0.1:{self.admin_port}"]
        return await asyncio.to_thread(run_python, command, cwd=REPO, env=env, timeout=120)

    async def purge_soft(self, path: str) -> None:
        url = f"http://127.0.0.1:{self.admin_port}/purge"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as client:
            params = {"url": path, "soft": "1"}
            async with client.post(url, params=params, headers=headers) as resp:
                assert resp.status == 200 and (await resp.json())["purged"] == 1


async def until_hit(instance: Instance, path: str) -> None:
    for _ in range(200):
        if "hit" in (await instance.get(path)).split("; "):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never became a hit")


@pytest.fixture
async def service() -> AsyncIterator[ImageService]:
    async with ImageService(gate=3) as origin:
        yield origin


async def test_warm_fills_each_path_once_within_the_concurrency_bound(
    service: ImageService, tmp_path: Path
) -> None:
    paths = [f"/unsafe/{n}x{n}/photos/p{n}.jpg" for n in range(1, 13)]
    instance = Instance(service, tmp_path, "--warm-concurrency", "3")
    try:
        done = await instance.warm(["# twelve renders", "", *paths])
        assert done.returncode == 0, done.stdout + done.stderr
        assert "12 warmed: 12 filled, 0 refreshed, 0 already cached, 0 failed" in done.stdout
        assert service.most_in_flight == 3  # met, and never exceeded
        for path in paths:
            await until_hit(instance, path)
            assert service.hits[path] == 1
        again = await instance.warm(paths)
        assert "12 already cached" in again.stdout, again.stdout
        assert all(service.hits[path] == 1 for path in paths)
    finally:
        stop(instance.proc)


async def test_a_failed_render_is_reported_with_its_reason(tmp_path: Path) -> None:
    async with ImageService() as service:
        service.missing.add("/unsafe/10x10/gone.jpg")
        instance = Instance(service, tmp_path)
        try:
            done = await instance.warm(["/unsafe/10x10/gone.jpg", "/unsafe/10x10/here.jpg"])
            assert done.returncode == 1
            assert "1 filled" in done.stdout and "1 failed" in done.stdout
            assert "failed: origin answered 404 x1" in done.stdout
        finally:
            stop(instance.proc)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("img/a.jpg", "must be a request path starting with /"),
        ("/a b.jpg", "without spaces"),
        ("//evil.example/a.jpg", "scheme-relative"),
        ("/a.jpg#top", "fragment"),
    ],
)
async def test_a_bad_line_is_named_and_nothing_is_warmed(
    line: str, why: str, service: ImageService, tmp_path: Path
) -> None:
    instance = Instance(service, tmp_path)
    try:
        done = await instance.warm(["/ok.jpg", "# fine", line])
        assert done.returncode == 2
        assert f"warm.txt:3: {line!r}" in done.stderr and why in done.stderr
        assert not service.hits
    finally:
        stop(instance.proc)


@pytest.mark.parametrize(
    ("query", "rule"),
    [("", ()), ("?utm_source=mail", ("--drop-query-params", "utm_*"))],
    ids=["plain", "keyed-by-the-query-rule"],
)
async def test_warm_up_stops_at_the_size_bound_and_the_hot_set_stays(
    query: str, rule: tuple[str, ...], tmp_path: Path
) -> None:
    async with ImageService() as service:
        # Bodies are 4 KiB: room for about eight entries.
        options = ("--max-size", "36K", "--warm-concurrency", "2", *rule)
        instance = Instance(service, tmp_path, *options)
        try:
            hot = [f"/unsafe/hot{n}.jpg" for n in range(3)]
            for path in hot:
                await until_hit(instance, path)
            # With a query rule, the warmed entries are stored under the keyed target (the
            # query dropped): they must be ranked least recently used all the same.
            done = await instance.warm([f"/unsafe/cold{n}.jpg{query}" for n in range(20)])
            assert done.returncode == 0, done.stderr
            assert "skipped: the store is at --max-size" in done.stdout, done.stdout
            assert " 0 filled" not in done.stdout  # it did warm some before the bound
            # The hot set was last used before the warm-up; clients' misses now evict the
            # warmed entries (ranked least recently used), not the hot set.
            for n in range(3):
                await until_hit(instance, f"/unsafe/new{n}.jpg")
            for path in hot:
                assert "hit" in (await instance.get(path)).split("; ")
                assert service.hits[path] == 1
        finally:
            stop(instance.proc)


async def test_soft_purged_entries_are_cached_unless_refresh(tmp_path: Path) -> None:
    async with ImageService() as service:
        instance = Instance(service, tmp_path)
        try:
            paths = ["/unsafe/a.jpg", "/unsafe/b.jpg"]
            await instance.warm(paths)
            for path in paths:
                await until_hit(instance, path)
                await instance.purge_soft(path)
            plain = await instance.warm(paths)
            assert "2 already cached" in plain.stdout, plain.stdout
            assert all(service.hits[path] == 1 for path in paths)
            refreshed = await instance.warm(paths, "--refresh")
            assert "2 refreshed" in refreshed.stdout, refreshed.stdout
            for path in paths:
                assert service.hits[path] == 2  # revalidated once each (a 304)
                cache = await instance.get(path)
                assert "hit" in cache.split("; ") and "ttl=-" not in cache
        finally:
            stop(instance.proc)


async def test_post_warm_needs_the_token_and_names_a_bad_item(
    service: ImageService, tmp_path: Path
) -> None:
    instance = Instance(service, tmp_path)
    url = f"http://127.0.0.1:{instance.admin_port}/warm"
    try:
        async with aiohttp.ClientSession() as client:
            async with client.post(url, json={"paths": ["/a.jpg"]}) as resp:
                assert resp.status == 401
            headers = {"Authorization": f"Bearer {TOKEN}"}
            body = {"paths": ["/a.jpg", "b.jpg"]}
            async with client.post(url, json=body, headers=headers) as resp:
                assert resp.status == 400
                assert "paths[1] 'b.jpg'" in (await resp.json())["error"]
            async with client.post(url, json={"paths": []}, headers=headers) as resp:
                assert resp.status == 400
            # Every path is warmed once per Accept value: the list of jobs is their product,
            # so the Accept values are bounded as the paths are.
            body = {"paths": ["/a.jpg"], "accept": ["*/*"] * 17}
            async with client.post(url, json=body, headers=headers) as resp:
                assert resp.status == 400
                assert "at most 16 Accept values" in (await resp.json())["error"]
        assert not service.hits
    finally:
        stop(instance.proc)


async def test_progress_bar_on_a_tty(tmp_path: Path) -> None:
    async with ImageService() as service:
        instance = Instance(service, tmp_path)
        leader, follower = os.openpty()
        try:
            listing = tmp_path / "list.txt"
            listing.write_text("/unsafe/one.jpg\n/unsafe/two.jpg\n")
            env = {**os.environ, "PIXCACHE_ADMIN_TOKEN": TOKEN}
            command = [sys.executable, "-m", "proxy", "warm", str(listing)]
            command += ["--instances", f"127.0.0.1:{instance.admin_port}"]
            done = await asyncio.to_thread(
                subprocess.run,
                command,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=follower,
                text=True,
                timeout=120,
            )
            os.close(follower)
            follower = -1
            shown = os.read(leader, 65536).decode()
            assert done.returncode == 0
            assert "\r[" + "#" * 30 + "] 2/2 2 filled" in shown
            assert "2 warmed: 2 filled" in done.stdout
        finally:
            if follower >= 0:
                os.close(follower)
            os.close(leader)
            stop(instance.proc)


async def test_each_path_is_warmed_once_per_accept_value(tmp_path: Path) -> None:
    async with ImageService() as service:
        instance = Instance(service, tmp_path, "--warm-concurrency", "1")
        try:
            paths = ["/unsafe/x1.jpg", "/unsafe/x2.jpg"]
            done = await instance.warm(paths, "--accept", "image/avif,*/*", "--accept", "*/*")
            # The service does not vary on Accept: the second value finds the first's entry.
            assert "4 warmed: 2 filled, 0 refreshed, 2 already cached" in done.stdout
            assert service.accepts == ["image/avif,*/*", "image/avif,*/*"]
        finally:
            stop(instance.proc)


async def test_a_path_is_requested_exactly_as_listed(tmp_path: Path) -> None:
    # Image services sign the path byte for byte (imgproxy's plain source URLs are
    # percent-encoded): a warm-up that rewrote escapes or dot segments would fill another
    # entry than clients request, and the service would refuse its signature.
    async with ImageService() as service:
        instance = Instance(service, tmp_path)
        paths = ["/sig/rs:fit:9/plain/https%3A%2F%2Fexample.com%2Fa%2Ejpg", "/unsafe/a/../b.jpg"]
        try:
            done = await instance.warm(paths)
            assert "2 warmed: 2 filled" in done.stdout, done.stdout + done.stderr
            assert service.hits == {path: 1 for path in paths}
        finally:
            stop(instance.proc)
