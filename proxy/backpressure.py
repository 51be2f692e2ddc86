"""Backpressure instead of memory growth: at most `max_fills` fills fetch at once and at
most `fill_queue` more wait for a slot; past that, or with this process's resident memory
above --max-rss, a new fill is refused (503 with Retry-After) instead of queued."""

from __future__ import annotations

import asyncio
import os

from proxy import metrics
from proxy.errors import Overloaded
from storage import SYSTEM_CLOCK, Clock

RSS_TTL = 0.1  # seconds a reading of the resident set size is reused


class FillSlots:
    def __init__(
        self,
        max_fills: int = 64,
        fill_queue: int = 256,
        max_rss: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._slots = asyncio.Semaphore(max_fills)
        self.most_started = max_fills + fill_queue
        self.max_rss = max_rss
        self._monotonic = clock.monotonic
        self._rss = (float("-inf"), 0)  # (read at, bytes)

    def admit(self, started: int) -> None:
        """Raise Overloaded when a new fill may not start, with `started` not ended yet."""
        if self.max_rss is not None and self._resident_bytes() > self.max_rss:
            raise Overloaded("memory above --max-rss; try again shortly")
        if started >= self.most_started:
            raise Overloaded("too many fills in flight; try again shortly")

    async def take(self) -> None:
        """One of the `max_fills` slots, once free: waits in the queue while all are taken.
        Give it back with `release`."""
        queued = self._slots.locked()
        if queued:
            metrics.FILL_QUEUE.inc()
        try:
            await self._slots.acquire()
        finally:
            if queued:
                metrics.FILL_QUEUE.dec()

    def release(self) -> None:
        self._slots.release()

    def _resident_bytes(self) -> int:
        """This process's resident set size, read from /proc at most every RSS_TTL seconds."""
        now = self._monotonic()
        if now - self._rss[0] > RSS_TTL:
            with open("/proc/self/statm") as statm:
                pages = int(statm.read().split()[1])
            self._rss = (now, pages * os.sysconf("SC_PAGE_SIZE"))
        return self._rss[1]
