"""A clock tests move forward: `advance(s)` makes `s` seconds pass at once for whatever
reads it, so entries turn stale and sleepers on it wake without the test sleeping.

Its wall time (`now`) stands still between advances, apart from a microsecond per call
that keeps the calls in the order they were made (a purge after a fill started is still
after it): whether an entry is fresh no longer depends on how loaded the machine is. Its
monotonic time runs with the real one, plus what was advanced, so that everything that
polls or paces (a key's lock, the upkeep loop, the scrubber) goes on as in production.

Pass it to the store (proxy.app.make_store) and to the origins whose Date must agree
with it (FakeOrigin(clock=...)); an origin with the real Date is ahead of it, which
only makes its responses look younger."""

from __future__ import annotations

import asyncio
import contextlib
import time
from email.utils import formatdate

# Far below Date's one-second resolution, far above a float's step at today's epoch.
TICK = 1e-6


class FakeClock:
    def __init__(self, start: float | None = None, *, virtual: bool = False) -> None:
        self._wall = time.time() if start is None else start
        self.offset = 0.0
        # Virtual: a sleep moves the clock by what is left of it at once, so code that
        # paces itself (the scrubber) runs at full speed while its own clock says it paced.
        self.virtual = virtual
        self.sleeping = 0  # sleeps not over yet, for tests that wait until code paces
        self._advanced = asyncio.Event()

    def now(self) -> float:
        self._wall += TICK
        return self._wall + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        """Wake once `seconds` passed on this clock: by real time or by `advance`."""
        until = self.monotonic() + seconds
        self.sleeping += 1
        try:
            while (left := until - self.monotonic()) > 0:
                if self.virtual:
                    self.advance(left)
                    await asyncio.sleep(0)  # still a point where others run, as a sleep is
                    continue
                advanced = self._advanced
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(advanced.wait(), left)
        finally:
            self.sleeping -= 1

    async def until_sleeping(self, seconds: float = 10.0) -> None:
        """Wait until some code sleeps on this clock (a bound against a hang, in real time)."""
        for _ in range(int(seconds / 0.005)):
            if self.sleeping:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"nothing slept on the clock within {seconds} s")

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.offset += seconds
        self._advanced.set()  # wake every sleeper to look at the clock again
        self._advanced = asyncio.Event()

    def http_date(self) -> str:
        """This clock's now as an HTTP Date field value (RFC 9110 §5.6.7)."""
        return formatdate(self.now(), usegmt=True)
