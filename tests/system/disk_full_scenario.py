"""The disk-full scenario of tests/system/test_disk_full.py, run inside a mount namespace.

The test runs this module under `unshare -Urm` after mounting a small tmpfs on the cache
directory; the tmpfs is only visible inside that namespace, so everything that needs to see
it happens here: the fake origin (in this process), `pixcache serve` (a child process, which
inherits the namespace), the clients, and the inspection of the files on the tmpfs. It prints
one JSON document of observations on its last stdout line; the test asserts on it.

    python -m tests.system.disk_full_scenario --cache-dir DIR --log FILE
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from storage.entry import CorruptEntry
from storage.layout import Layout
from storage.lookup import open_entry
from storage.store import FREE_SPACE_TTL
from storage.walk import iter_unnamed_bodies
from tests.fake_origin import FakeOrigin, Obj, pattern_bytes
from tests.system.procs import REPO, free_port, stop, wait_for_port

MIB = 1024 * 1024
KIB = 1024
CACHEABLE = {"Cache-Control": "max-age=3600", "Content-Type": "application/octet-stream"}
# Sizes and seeds of every object; the test computes the expected bytes from the same table.
OBJECTS: dict[str, tuple[int, int]] = {"/warm.jpg": (64 * KIB, 1)}
OBJECTS.update({f"/full{i}.jpg": (MIB, 10 + i) for i in range(3)})
OBJECTS.update({f"/obj{i}.jpg": (MIB + i * 4099, 100 + i) for i in range(20)})
CLIENTS_PER_OBJECT = 3
# Free space the ballast leaves: a fill gets a few chunks into its temp file, then ENOSPC.
BALLAST_LEAVES = 192 * KIB
# Never write a ballast anywhere but on the small tmpfs the test mounted.
MOST_FS_BYTES = 64 * MIB
# The min-free setting of the restart in phase 4.
MIN_FREE = 3 * MIB


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def check_entries(cache_dir: Path) -> list[dict[str, Any]]:
    """Every file under entries/: a complete entry whose body is exactly the origin's?"""
    found = []
    for path in sorted((cache_dir / "entries").rglob("*")):
        if not path.is_file():
            continue
        report: dict[str, Any] = {"file": path.name, "size": path.stat().st_size}
        try:
            entry = open_entry(path)
        except (CorruptEntry, OSError) as exc:
            report.update(ok=False, reason=f"not a complete entry: {exc}")
            found.append(report)
            continue
        assert entry is not None
        report["size"] = entry.size  # head and body
        try:
            meta = entry.meta
            body = os.pread(entry.fd, meta.body_length, 0)
        finally:
            os.close(entry.fd)
        report["key"] = meta.key
        if meta.key not in OBJECTS:
            report.update(ok=False, reason="unknown key")
        elif body != pattern_bytes(*OBJECTS[meta.key]):
            report.update(ok=False, reason="body differs from the origin's")
        elif hashlib.sha256(body).hexdigest() != meta.sha256:
            report.update(ok=False, reason="checksum in the metadata differs")
        else:
            report["ok"] = True
        found.append(report)
    return found


async def settle(cache_dir: Path, timeout: float = 10.0) -> list[str]:
    """Wait for the fills of finished responses to commit or drop their temp files; returns
    what is still in tmp/ at the end, and any body file no entry names (nothing, unless a
    temp file or a body leaked)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        unnamed = [
            str(o.path.relative_to(cache_dir)) for o in iter_unnamed_bodies(Layout(cache_dir))
        ]
        left = _files(cache_dir / "tmp") + unnamed
        if not left or loop.time() > give_up:
            return left
        await asyncio.sleep(0.05)


class Clients:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def one(self, path: str) -> dict[str, Any]:
        digest = hashlib.sha256()
        length = 0
        try:
            async with self.session.get(self.url + path) as resp:
                async for chunk in resp.content.iter_chunked(256 * KIB):
                    digest.update(chunk)
                    length += len(chunk)
                return {
                    "path": path,
                    "status": resp.status,
                    "length": length,
                    "sha256": digest.hexdigest(),
                    "cache": resp.headers.get("Cache-Status", ""),
                }
        except (aiohttp.ClientError, ConnectionError) as exc:
            return {"path": path, "status": -1, "length": length, "error": repr(exc)}

    async def many(self, paths: list[str], per_path: int = 1) -> list[dict[str, Any]]:
        """Every path at once, each by `per_path` concurrent clients."""
        return list(await asyncio.gather(*(self.one(p) for p in paths for _ in range(per_path))))


def write_ballast(path: Path, leave: int) -> int:
    st = os.statvfs(path.parent)
    if st.f_blocks * st.f_frsize > MOST_FS_BYTES:
        raise SystemExit(f"{path.parent} is not the small tmpfs; refusing to fill it")
    size = st.f_bavail * st.f_frsize - leave
    block = b"\0" * MIB
    with path.open("wb") as f:
        written = 0
        while written < size:
            written += f.write(block[: min(MIB, size - written)])
        f.flush()
        os.fsync(f.fileno())
    return size


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def start_pixcache(origin_url: str, cache_dir: Path, log_path: Path, *extra: str) -> Any:
    """`pixcache serve` in this namespace (so on the tmpfs), its JSON log appended to a file
    outside the tmpfs. Returns (process, base URL)."""
    port = free_port()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "serve",
                "--origin",
                origin_url,
                "--listen",
                f"127.0.0.1:{port}",
                "--cache-dir",
                str(cache_dir),
                "--log-level",
                "info",
                "--log-format",
                "json",
                "--admin-listen",
                f"127.0.0.1:{free_port()}",
                *extra,
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop(proc)
        raise
    return proc, f"http://127.0.0.1:{port}"


async def scenario(cache_dir: Path, log_path: Path) -> dict[str, Any]:
    fs = os.statvfs(cache_dir)
    result: dict[str, Any] = {"fs_size": fs.f_blocks * fs.f_frsize}
    if result["fs_size"] > MOST_FS_BYTES:
        raise SystemExit(f"{cache_dir} is not a small tmpfs (run me through the test)")
    async with FakeOrigin() as origin:
        for path, (size, seed) in OBJECTS.items():
            # A short header delay, so that the clients of one object join one fill.
            origin.add(path, Obj(size=size, seed=seed, headers=CACHEABLE, header_delay=0.05))
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            # Blocking waits for the port are fine here: no request is in flight yet.
            proc, url = await asyncio.to_thread(start_pixcache, origin.url, cache_dir, log_path)
            try:
                result.update(await _phases(Clients(url, session), origin, cache_dir))
                result["alive_at_end"] = proc.poll() is None
            finally:
                await asyncio.to_thread(stop, proc)
            result["exit_status"] = proc.returncode

            # 4. A restart with min-free on the full disk: old entries are evicted until
            # the minimum is free, and new objects are stored again.
            proc, url = await asyncio.to_thread(
                start_pixcache, origin.url, cache_dir, log_path, "--min-free", "3M"
            )
            try:
                result.update(await _min_free_phase(Clients(url, session), cache_dir))
                result["alive_at_end_min_free"] = proc.poll() is None
            finally:
                await asyncio.to_thread(stop, proc)
            result["exit_status_min_free"] = proc.returncode
        result["origin_hits"] = dict(origin.hits)
    return result


async def _min_free_phase(clients: Clients, cache_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"free_at_restart": free_bytes(cache_dir)}
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 10
    while free_bytes(cache_dir) < MIN_FREE and loop.time() < give_up:
        await asyncio.sleep(0.1)
    await asyncio.sleep(FREE_SPACE_TTL)  # pixcache trusts its last statvfs this long
    out["free_after_eviction"] = free_bytes(cache_dir)
    out["entries_after_eviction"] = check_entries(cache_dir)
    # An object that is not stored now, whichever ones the overflow phase happened to keep
    # and eviction happened to leave: its first request must fill, its second must hit.
    kept = {entry.get("key") for entry in out["entries_after_eviction"]}
    target = next(path for path in reversed(OBJECTS) if path not in kept)
    out["min_free_target"] = target
    out["min_free_first"] = await clients.one(target)
    await settle(cache_dir)
    out["min_free_second"] = await clients.one(target)
    out["min_free_tmp_left"] = await settle(cache_dir)
    out["min_free_entries"] = check_entries(cache_dir)
    return out


async def _phases(clients: Clients, origin: FakeOrigin, cache_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ballast = cache_dir / "ballast"
    full = [f"/full{i}.jpg" for i in range(3)]

    # The store works, and its index exists, before the disk fills up.
    out["warm"] = [await clients.one("/warm.jpg"), await clients.one("/warm.jpg")]
    await settle(cache_dir)

    # 1. A ballast leaves too little room: fills hit ENOSPC while writing their temp files.
    out["ballast_size"] = write_ballast(ballast, BALLAST_LEAVES)
    out["free_with_ballast"] = free_bytes(cache_dir)
    out["enospc_first"] = await clients.many(full, CLIENTS_PER_OBJECT)
    out["enospc_first_tmp_left"] = await settle(cache_dir)
    out["enospc_first_entries"] = check_entries(cache_dir)
    hits_before = {p: origin.hits[p] for p in full}
    out["enospc_again"] = [await clients.one(p) for p in full]
    out["enospc_again_origin_requests"] = {p: origin.hits[p] - hits_before[p] for p in full}
    out["enospc_again_tmp_left"] = await settle(cache_dir)

    # 2. Space returns: the same objects are stored again, and then hits.
    ballast.unlink()
    out["free_without_ballast"] = free_bytes(cache_dir)
    out["recovered_first"] = [await clients.one(p) for p in full]
    await settle(cache_dir)
    out["recovered_second"] = [await clients.one(p) for p in full]

    # 3. More distinct objects than fit, five at a time, three clients each.
    paths = [f"/obj{i}.jpg" for i in range(20)]
    overflow = []
    for start in range(0, len(paths), 5):
        overflow += await clients.many(paths[start : start + 5], CLIENTS_PER_OBJECT)
    out["overflow"] = overflow
    out["overflow_tmp_left"] = await settle(cache_dir)
    out["overflow_entries"] = check_entries(cache_dir)
    out["overflow_again"] = await clients.many(paths + full + ["/warm.jpg"])
    out["overflow_again_tmp_left"] = await settle(cache_dir)
    out["final_entries"] = check_entries(cache_dir)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(scenario(args.cache_dir, args.log))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
