"""A clock tests move forward: the real time plus an offset that only `advance` changes.

It keeps running with the real clock, so everything that merely waits (a fill in flight, a
socket) behaves as in production, and `advance(s)` makes `s` seconds pass at once for
whatever reads the clock: entries turn stale, sleepers on it wake. Pass it to the store
(proxy.app.make_store) and to the origins whose Date must agree with it (FakeOrigin)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from email.utils import formatdate


class FakeClock:
    def __init__(self) -> None:
        self.offset = 0.0
        self._advanced = asyncio.Event()

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        """Wake once `seconds` passed on this clock: by real time or by `advance`."""
        until = self.monotonic() + seconds
        while (left := until - self.monotonic()) > 0:
            advanced = self._advanced
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(advanced.wait(), left)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.offset += seconds
        self._advanced.set()  # wake every sleeper to look at the clock again
        self._advanced = asyncio.Event()

    def http_date(self) -> str:
        """This clock's now as an HTTP Date field value (RFC 9110 §5.6.7)."""
        return formatdate(self.now(), usegmt=True)
