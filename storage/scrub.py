"""The scrubber: a running proxy re-reads every entry, forever, at a bounded rate.

A hit checks an entry's size, and the SHA-256 only of bodies up to the configured size
(storage.lookup); a flipped bit inside a larger body is found here (or by `pixcache verify`)
and the entry removed, so the next request is a miss instead of a wrong image. The steps
are storage.verify's; this module only paces them and runs them in threads.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog

from storage.clock import SYSTEM_CLOCK, Clock
from storage.layout import Layout
from storage.remove import remove_entry
from storage.verify import CHUNK, BodyCheck, EntryCheck, FileId, open_check
from storage.walk import bucket_dirs, entry_files_in

log = structlog.get_logger("pixcache.storage")

# A path replaced by fills this many times during one check is left to the next pass.
MAX_RESTARTS = 3
# Seconds to wait after a failure that is not the entry's fault (out of descriptors, ...).
ERROR_PAUSE = 1.0

T = TypeVar("T")


def _first_read(path: Path, chunk: int) -> tuple[BodyCheck | EntryCheck, int]:
    """Open the entry and hash its first chunk, in one thread call: that checks a small entry
    whole. Returns the check and the bytes read. No descriptor outlives the call."""
    opened = open_check(path, chunk)
    if isinstance(opened, EntryCheck):
        return opened, 0  # no body was read: nothing to pace
    check, fd = opened
    try:
        check.feed(fd)
    finally:
        os.close(fd)
    return check, check.bytes_read


def _next_read(check: BodyCheck) -> bool:
    """Hash the next chunk; False when the body path no longer names the file being checked.

    Reopening per chunk (instead of holding a descriptor across awaits) means a cancelled
    scrubber never leaves a descriptor open, or closes one under a running thread."""
    try:
        fd = os.open(check.body_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if FileId.of(os.fstat(fd)) != check.body_id:
            return False
        check.feed(fd)
        return True
    finally:
        os.close(fd)


class Scrubber:
    """Verifies every entry's checksum, pass after pass, reading at most `bytes_per_second`
    on average; removes a corrupt entry and reports it to `on_corrupt(path, reason)`, where
    reason is a storage.verify.Problem value such as "checksum mismatch"."""

    def __init__(
        self,
        layout: Layout,
        bytes_per_second: int,
        on_corrupt: Callable[[Path, str], None],
        *,
        pass_pause: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if bytes_per_second <= 0:
            raise ValueError(f"bytes_per_second must be positive, got {bytes_per_second}")
        self.layout = layout
        self.bytes_per_second = bytes_per_second
        self.on_corrupt = on_corrupt
        self.pass_pause = pass_pause
        self.clock = clock
        # No read bigger than one second's budget, so no burst bigger than that either.
        self.chunk = max(4096, min(CHUNK, bytes_per_second))
        self.passes = 0  # passes completed over the whole cache
        self._ready_at = 0.0

    async def run(self) -> None:
        """Scrub forever: a pass over every entry, a pause, again. Cancel the task to stop."""
        while True:
            await self.scrub_pass()
            self.passes += 1
            # The pause also keeps an empty cache from making this a busy loop.
            await self.clock.sleep(self.pass_pause)

    async def scrub_pass(self) -> None:
        for bucket in await self._list(bucket_dirs, self.layout):
            for path in await self._list(entry_files_in, bucket):
                try:
                    await self._scrub(path)
                except OSError as exc:  # EMFILE, EACCES...: not the entry's fault; go on
                    log.warning("scrub_failed", path=str(path), error=str(exc))
                    await self.clock.sleep(ERROR_PAUSE)  # a lasting fault must not spin or flood

    async def _list(self, list_dir: Callable[[T], list[Path]], arg: T) -> list[Path]:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, list_dir, arg)
        except OSError as exc:
            log.warning("scrub_list_failed", path=str(arg), error=str(exc))
            return []

    async def _scrub(self, path: Path) -> None:
        for _ in range(MAX_RESTARTS):
            result = await self._check(path)
            if result is not None:
                await self._settle(result)
                return

    async def _check(self, path: Path) -> EntryCheck | None:
        """The finished check, or None if the file was replaced or removed half way."""
        loop = asyncio.get_running_loop()
        check, nbytes = await loop.run_in_executor(None, _first_read, path, self.chunk)
        await self._pace(nbytes)
        if isinstance(check, EntryCheck):
            return check
        while check.result is None:
            before = check.bytes_read
            if not await loop.run_in_executor(None, _next_read, check):
                return None
            await self._pace(check.bytes_read - before)
        return check.result

    async def _settle(self, check: EntryCheck) -> None:
        if check.problem is None or check.file_id is None:
            return
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, remove_entry, check.path, check.file_id):
            return  # a fill replaced it meanwhile: the new file is checked next pass
        try:
            self.on_corrupt(check.path, str(check.problem))
        except Exception:  # the caller's bug must not stop the scrubbing
            log.exception("scrub_on_corrupt_failed", path=str(check.path))

    async def _pace(self, nbytes: int) -> None:
        """Sleep so that reads average at most bytes_per_second: each read pushes the next
        one back by its share of time. Idle time is not saved up for a later burst."""
        now = self.clock.monotonic()
        self._ready_at = max(self._ready_at, now) + nbytes / self.bytes_per_second
        await self.clock.sleep(self._ready_at - now)
