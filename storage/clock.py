"""The clock every cache decision reads: wall time, monotonic time and sleeping.

It is built once (the real one, unless a test passes its own) and handed to the store, the
app, the handler, the fills and the admin, so that tests can move time forward instead of
sleeping until an entry turns stale. It lives in storage/, the lowest layer, because the
store and the proxy must read the same clock: a purge's time (storage) is compared with
the time its fills started (proxy), an entry's expiry with the age the handler computes.

What stays off it, on purpose:
- deadlines armed as event-loop timers (origin stages, client timeouts) run on
  `loop.time()`, the clock those timers fire by;
- log timestamps and request durations describe the real world for the operator.

The real clock's methods are the `time` and `asyncio` functions themselves, so a caller
that binds `clock.now` once pays nothing per call beyond the attribute load."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (what Date, Age and expiry are measured in)."""
        ...

    def monotonic(self) -> float:
        """Seconds that only move forward, for intervals."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` of this clock's monotonic time have passed."""
        ...


class SystemClock:
    """The real clock."""

    now = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(asyncio.sleep)


SYSTEM_CLOCK: Clock = SystemClock()
