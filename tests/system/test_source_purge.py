"""Purge by source against a real `pixcache serve` (two workers) in front of a loopback
image service: for imgproxy, imagor and thumbor URL forms, several derivatives of one source
and one of another are stored; a purge by the first source makes each of its derivatives a
miss again (the origin renders it once more) and leaves the other a hit. Hard and soft
purges show in Cache-Status (fwd=uri-miss, or fwd=stale revalidated with a 304); an entry
the index lost is purged all the same; `pixcache purge --source` does it from the shell."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.image_service_origin import ImageService, body_for
from tests.system.procs import (
    REPO,
    free_port,
    start_pixcache,
    stop,
    wait_for_children,
    wait_for_port,
)
from tests.zygote import run_python

TOKEN = "source-purge-token-0123"
SOURCE = "https://images.example.com/photos/cat.jpg?v=2"
OTHER = "https://images.example.com/photos/dog.jpg"


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


ENCODED = "https%3A%2F%2Fimages.example.com%2Fphotos%2Fcat.jpg%3Fv%3D2"
FORMS = {
    "imgproxy": (
        [
            f"/insecure/rs:fit:300:300/plain/{ENCODED}@webp",
            "/insecure/w:100/plain/https://images.example.com/photos/cat.jpg?v=2",
            f"/AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM/rs:fill:64:64/g:sm/{b64(SOURCE)}.avif",
            f"/insecure/q:50/{b64(SOURCE)[:12]}/{b64(SOURCE)[12:]}.png",
        ],
        f"/insecure/rs:fit:300:300/plain/{OTHER}@webp",
    ),
    "imagor": (
        [
            f"/unsafe/fit-in/300x200/{ENCODED}",
            "/unsafe/200x0/filters:format(webp):quality(70)/" + ENCODED,
            "/1kV5-zJdMHm8rYtAGfUMCxc4HNI=/fit-in/stretch/100x100/smart/" + ENCODED,
            "/unsafe/filters:watermark(images.example.com/logo.png,0,0,0)/" + ENCODED,
        ],
        f"/unsafe/fit-in/300x200/{OTHER}",
    ),
    "thumbor": (
        [
            f"/unsafe/300x200/smart/{ENCODED}",
            f"/unsafe/trim/10x10:200x200/adaptive-fit-in/-50x50/left/top/{ENCODED}",
            "/1kV5-zJdMHm8rYtAGfUMCxc4HNI=/meta/x80/" + ENCODED,
        ],
        f"/unsafe/300x200/smart/{OTHER}",
    ),
}


@dataclass
class Instance:
    url: str
    admin: str
    cache_dir: Path
    client: aiohttp.ClientSession

    async def get(self, path: str) -> str:
        # encoded=True: the target goes out exactly as written (no re-quoting).
        async with self.client.get(URL(self.url + path, encoded=True)) as resp:
            assert resp.status == 200, path
            assert await resp.read() == body_for(path)
            return resp.headers["Cache-Status"]

    async def stored(self, path: str) -> None:
        """Request until it is a hit (bounded): its entry is committed."""
        for _ in range(200):
            if "hit" in (await self.get(path)).split("; "):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{path} never became a hit")

    async def purge(self, source: str, soft: bool = False) -> dict:
        params = {"source": source, **({"soft": "1"} if soft else {})}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.client.post(self.admin + "/purge", params=params, headers=headers) as r:
            assert r.status == 200, await r.text()
            return await r.json()


@pytest.fixture
async def service() -> AsyncIterator[ImageService]:
    async with ImageService() as origin:
        yield origin


async def start(service: ImageService, tmp_path: Path, grammar: str) -> tuple:
    port, admin_port = free_port(), free_port()
    proc = start_pixcache(
        service.url,
        tmp_path / "cache",
        port,
        "--workers",
        "2",
        "--source-grammar",
        grammar,
        "--admin-listen",
        f"127.0.0.1:{admin_port}",
        "--admin-token",
        TOKEN,
    )
    wait_for_children(proc.pid, 2)
    wait_for_port(admin_port, proc)  # the admin listener opens after the serving one
    client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    return proc, Instance(url, admin, tmp_path / "cache", client)


@pytest.mark.parametrize("grammar", sorted(FORMS))
async def test_purge_by_source_hard_then_soft(
    grammar: str, service: ImageService, tmp_path: Path
) -> None:
    derivatives, other = FORMS[grammar]
    proc, inst = await start(service, tmp_path, grammar)
    try:
        for path in [*derivatives, other]:
            await inst.stored(path)
        assert all(service.hits[p] == 1 for p in [*derivatives, other])

        answer = await inst.purge(SOURCE)
        assert answer["purged"] == len(derivatives)
        for path in derivatives:
            cache = await inst.get(path)
            assert "fwd=uri-miss" in cache and "stored" in cache
            assert service.hits[path] == 2
        assert "hit" in (await inst.get(other)).split("; ")
        assert service.hits[other] == 1

        for path in derivatives:
            await inst.stored(path)
        answer = await inst.purge(SOURCE, soft=True)
        assert answer["purged"] == len(derivatives)
        for path in derivatives:
            cache = await inst.get(path)  # revalidated: the origin answers 304
            assert "fwd=stale" in cache and "fwd-status=304" in cache, cache
            assert service.hits[path] == 3
            assert "hit" in (await inst.get(path)).split("; ")  # fresh again
        assert "hit" in (await inst.get(other)).split("; ")
        assert service.hits[other] == 1
    finally:
        await inst.client.close()
        stop(proc)


async def test_entry_the_index_lost_is_purged_and_the_cli_purges_by_source(
    service: ImageService, tmp_path: Path
) -> None:
    derivatives, other = FORMS["imgproxy"]
    proc, inst = await start(service, tmp_path, "imgproxy")
    try:
        for path in [*derivatives, other]:
            await inst.stored(path)
        # An index write that failed (or a crash between commit and index): no row at all.
        with sqlite3.connect(inst.cache_dir / "index.sqlite3", timeout=30) as db:
            db.execute("DELETE FROM entries")
            db.execute("DELETE FROM entry_paths")
        env = {**os.environ, "PIXCACHE_ADMIN_TOKEN": TOKEN}
        args = ["purge", "--source", SOURCE, "--instances", inst.admin.removeprefix("http://")]
        done = await asyncio.to_thread(run_python, ["proxy", *args], cwd=REPO, env=env, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f'"purged": {len(derivatives)}' in done.stdout
        for path in derivatives:
            assert "fwd=uri-miss" in await inst.get(path)
            assert service.hits[path] == 2
        assert "hit" in (await inst.get(other)).split("; ")
        assert service.hits[other] == 1
    finally:
        await inst.client.close()
        stop(proc)


async def test_purge_by_source_without_a_grammar_says_which_setting(
    service: ImageService, tmp_path: Path
) -> None:
    proc, inst = await start(service, tmp_path, "none")
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        url = inst.admin + "/purge"
        async with inst.client.post(url, params={"source": SOURCE}, headers=headers) as resp:
            assert resp.status == 400
            assert "--source-grammar" in (await resp.json())["error"]
        async with inst.client.post(url, params={"source": SOURCE}) as resp:
            assert resp.status == 401  # the token first, as for every admin call
    finally:
        await inst.client.close()
        stop(proc)


async def test_a_fill_in_flight_when_its_source_is_purged_is_not_stored(
    service: ImageService, tmp_path: Path
) -> None:
    derivatives, _ = FORMS["imgproxy"]
    proc, inst = await start(service, tmp_path, "imgproxy")
    try:
        target = derivatives[0]
        service.held.add(target)
        fetch = asyncio.create_task(inst.get(derivatives[0]))
        for _ in range(500):  # until the origin has the request (bounded)
            if service.hits[target]:
                break
            await asyncio.sleep(0.01)
        assert service.hits[target] == 1
        assert (await inst.purge(SOURCE))["purged"] == 0  # nothing stored yet
        service.release.set()
        assert "fwd=uri-miss" in await fetch  # the client got its answer...
        cache = await inst.get(derivatives[0])
        assert "fwd=uri-miss" in cache  # ...but it was not stored: a miss again
        assert service.hits[target] == 2
    finally:
        await inst.client.close()
        stop(proc)


async def test_purge_by_source_after_a_crash_and_restart(
    service: ImageService, tmp_path: Path
) -> None:
    derivatives, other = FORMS["thumbor"]
    proc, inst = await start(service, tmp_path, "thumbor")
    try:
        for path in [*derivatives, other]:
            await inst.stored(path)
    finally:
        await inst.client.close()
        stop(proc, signal.SIGKILL)  # a crash: no orderly shutdown
    proc, inst = await start(service, tmp_path, "thumbor")
    try:
        assert (await inst.purge(SOURCE))["purged"] == len(derivatives)
        for path in derivatives:
            assert "fwd=uri-miss" in await inst.get(path)
            assert service.hits[path] == 2
        assert "hit" in (await inst.get(other)).split("; ")
        assert service.hits[other] == 1
    finally:
        await inst.client.close()
        stop(proc)
