"""Bit rot and truncation: a flipped byte is found by `pixcache verify` and by the scrubber,
and the entry is never served again; a truncated body is never served at all."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp

from tests.commits import settled
from tests.fake_origin import pattern_bytes
from tests.system.procs import REPO, free_port, start_origin, start_pixcache, stop
from tests.zygote import run_python

SIZE, SEED = 300_000, 77


def _verify(cache_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_python(
        ["proxy", "verify", "--cache-dir", str(cache_dir), *extra], cwd=REPO, timeout=60
    )


def _only_entry(cache_dir: Path) -> tuple[Path, Path]:
    """The one entry's head and body file."""
    [body] = [p for p in (cache_dir / "bodies").glob("??/*") if p.stat().st_size == SIZE]
    head = cache_dir / "entries" / body.parent.name / body.name.split(".")[0]
    assert head.is_file()
    return head, body


async def _get(url: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url) as resp:
            return resp.status, await resp.read(), resp.headers["Cache-Status"]


async def test_flipped_byte_is_found_by_verify_and_the_scrubber_and_never_served_again(
    tmp_path: Path,
) -> None:
    expected = pattern_bytes(SIZE, SEED)
    origin_proc, origin_url = start_origin({"/rot.jpg": (SIZE, SEED)})
    cache_dir = tmp_path / "cache"
    port = free_port()
    proc = start_pixcache(origin_url, cache_dir, port)
    url = f"http://127.0.0.1:{port}/rot.jpg"
    try:
        assert (await _get(url))[1] == expected
        await settled(cache_dir, entry=True)
        stop(proc)
        assert _verify(cache_dir).returncode == 0

        entry, body_file = _only_entry(cache_dir)
        with body_file.open("r+b") as f:  # one bit of the body rots; the size stays the same
            f.seek(SIZE // 2)
            byte = f.read(1)
            f.seek(SIZE // 2)
            f.write(bytes([byte[0] ^ 0x01]))
        found = _verify(cache_dir)
        assert found.returncode == 1
        assert "checksum" in (found.stdout + found.stderr)
        assert entry.exists()  # verify without --repair only reports

        # The scrubber, at a rate that reads the whole cache in well under a second.
        proc = start_pixcache(origin_url, cache_dir, port, "--scrub-rate", "50M")
        for _ in range(100):
            if not entry.exists():
                break
            await asyncio.sleep(0.1)
        assert not entry.exists(), "the scrubber removed the rotten entry"
        assert not body_file.exists(), "and its body"
        status, body, cache = await _get(url)
        assert status == 200 and body == expected
        assert "fwd=uri-miss" in cache  # fetched again, not served from the rotten entry
        await settled(cache_dir, entry=True)
        stop(proc)
        assert _verify(cache_dir).returncode == 0
    finally:
        stop(proc)
        stop(origin_proc)


async def test_truncated_body_file_is_never_served(tmp_path: Path) -> None:
    expected = pattern_bytes(SIZE, SEED)
    origin_proc, origin_url = start_origin({"/cut.jpg": (SIZE, SEED)})
    cache_dir = tmp_path / "cache"
    port = free_port()
    proc = start_pixcache(origin_url, cache_dir, port)
    url = f"http://127.0.0.1:{port}/cut.jpg"
    try:
        assert (await _get(url))[1] == expected
        await settled(cache_dir, entry=True)
        _, body_file = _only_entry(cache_dir)
        body_file.write_bytes(body_file.read_bytes()[: SIZE // 2])  # half the body gone
        status, body, cache = await _get(url)
        assert status == 200 and body == expected
        assert "hit" not in cache.split("; ")
        await settled(cache_dir, entry=True)
        status, body, cache = await _get(url)
        assert body == expected and cache.startswith("pixcache; hit")
    finally:
        stop(proc)
        stop(origin_proc)
