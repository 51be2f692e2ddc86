"""A full disk never costs a client a byte: `pixcache serve` on a real 8 MiB tmpfs.

The cache directory is a tmpfs mounted in a private mount namespace (`unshare -Urm`, no
privileges needed), so the disk really fills up and writes really fail with ENOSPC. The tmpfs
is visible only inside that namespace, so the whole scenario (fake origin, pixcache, clients,
inspection of the files) runs there, in tests/system/disk_full_scenario.py, and reports what
it saw as JSON; these tests assert on that report."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from typing import Any

import pytest

from tests.fake_origin import pattern_bytes
from tests.once_per_run import once_per_run
from tests.system.disk_full_scenario import MIN_FREE, OBJECTS
from tests.system.procs import REPO

TMPFS_SIZE = 8 * 1024 * 1024
MOUNT_AND_EXEC = 'mount -t tmpfs -o size=8m tmpfs "$0" && exec "$@"'


def _expected(path: str) -> tuple[int, str]:
    size, seed = OBJECTS[path]
    return size, hashlib.sha256(pattern_bytes(size, seed)).hexdigest()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> dict[str, Any]:
    return once_per_run("disk-full", tmp_path_factory, worker_id, lambda: _run(tmp_path_factory))


def _run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no unprivileged mount namespace (unshare -Urm: {probe.stderr.strip()})")
    base = tmp_path_factory.mktemp("disk-full")
    cache_dir = base / "cache"
    cache_dir.mkdir()
    log = base / "pixcache.log"
    command = ["unshare", "-Urm", "sh", "-c", MOUNT_AND_EXEC, str(cache_dir)]
    command += [sys.executable, "-m", "tests.system.disk_full_scenario"]
    command += ["--cache-dir", str(cache_dir), "--log", str(log)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    log_text = log.read_text() if log.exists() else ""
    assert done.returncode == 0, f"scenario failed:\n{done.stderr}\n--- pixcache log:\n{log_text}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["log"] = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    # The scenario ran on the small tmpfs, not on the disk under tmp_path.
    assert result["fs_size"] == TMPFS_SIZE
    return result


def _assert_complete(responses: list[dict[str, Any]]) -> None:
    assert responses
    for r in responses:
        assert r["status"] == 200, r
        assert (r["length"], r["sha256"]) == _expected(r["path"]), f"wrong bytes: {r}"


def _is_hit(response: dict[str, Any]) -> bool:
    return response["cache"].startswith("pixcache; hit")


def _keys(entries: list[dict[str, Any]]) -> list[str]:
    return sorted(e["key"] for e in entries)


def _assert_whole(entries: list[dict[str, Any]]) -> None:
    """Every file under entries/ is a complete entry holding exactly the origin's bytes."""
    for entry in entries:
        assert entry["ok"], f"partial or wrong entry on disk: {entry}"
    assert len(_keys(entries)) == len(set(_keys(entries)))


def test_every_client_gets_every_byte_while_the_disk_fills_up(report: dict[str, Any]) -> None:
    for phase in (
        "warm",
        "enospc_first",
        "enospc_again",
        "recovered_first",
        "recovered_second",
        "overflow",
        "overflow_again",
    ):
        _assert_complete(report[phase])
    _assert_complete([report["min_free_first"], report["min_free_second"]])
    # 20 objects of 1 MiB, 3 concurrent clients each, through an 8 MiB disk.
    assert len(report["overflow"]) == 60
    # pixcache never fell over: it was alive at the end and stopped cleanly on SIGTERM.
    assert report["alive_at_end"] and report["exit_status"] == 0
    assert report["alive_at_end_min_free"] and report["exit_status_min_free"] == 0


def test_enospc_while_writing_serves_uncached_and_leaves_nothing_behind(
    report: dict[str, Any],
) -> None:
    full = ["/full0.jpg", "/full1.jpg", "/full2.jpg"]
    assert report["free_with_ballast"] < 1024 * 1024  # less room than one object
    # The fills failed while writing (not refused up front): pixcache logged ENOSPC.
    faults = {e["key"] for e in report["log"] if e.get("reason") == "storage-enospc"}
    assert set(full) <= faults
    # Nothing of them was stored, and no temp file was left behind.
    assert _keys(report["enospc_first_entries"]) == ["/warm.jpg"]
    _assert_whole(report["enospc_first_entries"])
    assert report["enospc_first_tmp_left"] == []
    # Not stored: the next request goes to the origin again, and is again whole.
    assert not any(_is_hit(r) for r in report["enospc_again"])
    assert report["enospc_again_origin_requests"] == dict.fromkeys(full, 1)
    assert report["enospc_again_tmp_left"] == []


def test_caching_resumes_once_space_returns(report: dict[str, Any]) -> None:
    assert report["free_without_ballast"] > 4 * 1024 * 1024
    assert not any(_is_hit(r) for r in report["recovered_first"])
    # The first request after the ballast went was stored: the second is a hit.
    assert all(_is_hit(r) for r in report["recovered_second"]), report["recovered_second"]
    assert _is_hit(report["warm"][1])


def test_overflowing_the_disk_never_leaves_a_partial_entry(report: dict[str, Any]) -> None:
    stored = report["overflow_entries"]
    _assert_whole(stored)
    _assert_whole(report["final_entries"])
    assert report["overflow_tmp_left"] == []
    assert report["overflow_again_tmp_left"] == []
    # The disk was too small for everything: some objects were not stored...
    assert len(stored) < len(OBJECTS)
    assert sum(e["size"] for e in stored) <= TMPFS_SIZE
    # ...and what was stored is served from the cache, whole.
    hits = {r["path"] for r in report["overflow_again"] if _is_hit(r)}
    assert hits <= set(_keys(report["final_entries"]))
    assert {"/full0.jpg", "/full1.jpg", "/full2.jpg", "/warm.jpg"} <= hits
    misses = {r["path"] for r in report["overflow_again"]} - hits
    assert misses, "every object was stored: the disk never filled up"


def test_restart_with_min_free_makes_room_and_stores_again(report: dict[str, Any]) -> None:
    assert report["free_after_eviction"] >= MIN_FREE
    _assert_whole(report["entries_after_eviction"])
    assert not _is_hit(report["min_free_first"])
    assert _is_hit(report["min_free_second"])
    assert report["min_free_target"] not in _keys(report["entries_after_eviction"])
    assert report["min_free_target"] in _keys(report["min_free_entries"])
    _assert_whole(report["min_free_entries"])
    assert report["min_free_tmp_left"] == []


def test_min_free_eviction_keeps_the_entries_it_does_not_need(report: dict[str, Any]) -> None:
    """min-free evicts least recently used entries until the shortfall is covered, not a
    fixed batch of entries whatever their size (which emptied this 8 MiB cache)."""
    before = report["final_entries"]
    after = report["entries_after_eviction"]
    largest = max(e["size"] for e in before)
    assert after, f"min-free eviction emptied the cache ({len(before)} entries)"
    # Evicting the least recently used entries until MIN_FREE is free overshoots by less
    # than one entry.
    assert report["free_after_eviction"] - largest < MIN_FREE
