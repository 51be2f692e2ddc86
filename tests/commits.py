"""Waiting for commits. A client has a response's last byte a moment before the fill that
sent it has committed (fsync, rename) or dropped its temp file; a test that expects the next
request to be a hit, or counts files, waits for that moment first."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


async def settled(cache_dir: Path, *, entry: bool = False, seconds: float = 5.0) -> None:
    """Wait until no temp file is left in cache_dir/tmp (and, with `entry`, at least one
    entry exists). Raises AssertionError when that does not happen within `seconds`."""
    tmp, entries = cache_dir / "tmp", cache_dir / "entries"
    for _ in range(int(seconds / 0.02)):
        if not any(tmp.iterdir()) and (not entry or any(entries.glob("??/*"))):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fills never settled in {cache_dir}: {sorted(tmp.iterdir())}")


async def storing(cache_dir: Path, *, seconds: float = 10.0, written: bool = False) -> None:
    """Wait until a fill is writing a temp file in cache_dir/tmp: a request is in flight
    and its body is on its way (with `written`, some of it is in the file). Raises
    AssertionError when none appears within `seconds`."""
    tmp = cache_dir / "tmp"
    for _ in range(int(seconds / 0.01)):
        if tmp.is_dir() and any(not written or f.stat().st_size for f in tmp.iterdir()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no fill started storing in {cache_dir} within {seconds} s")


def descriptors_into(directory: Path) -> list[str]:
    """The files under `directory` that this process holds open."""
    inside, directory = [], directory.resolve()  # the kernel names files by real paths
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor among them)
            continue
        if target.startswith(f"{directory}/"):
            inside.append(target)
    return inside


async def descriptors_settle(directory: Path, count: int, *, seconds: float = 5.0) -> None:
    """Wait until this process holds exactly `count` files under `directory` open (fills
    close theirs as their tasks end). Raises AssertionError when that does not happen."""
    for _ in range(int(seconds / 0.02)):
        if len(descriptors_into(directory)) == count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} files open under {directory}: {descriptors_into(directory)}")
