"""The fills in flight, by coalescing key, and the tasks that run them.

Within a process, a request for a key with a fill in flight joins it. Across worker
processes, a fill first takes the key's lock (storage/keylock.py); a fill that had to wait
for another process's fill looks the key up again before fetching, and if that other fill
committed an entry, its requests are answered from it instead."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import structlog

from proxy import metrics
from proxy.errors import InternalError, Overloaded
from proxy.fill import Fill, FillSettings
from proxy.origins.base import Origin
from proxy.policy.storable import sharing_key
from proxy.redact import describe
from storage import SYSTEM_CLOCK, Clock, KeyLock, Store

log = structlog.get_logger("pixcache.fill")

RSS_TTL = 0.1
_rss: list[float] = [0.0, 0.0]  # (read at, bytes)


def resident_bytes(now: float) -> int:
    """This process's resident set size, read from /proc at most every RSS_TTL seconds
    (`now` in monotonic seconds)."""
    if now - _rss[0] > RSS_TTL:
        with open("/proc/self/statm") as statm:
            _rss[1] = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        _rss[0] = now
    return int(_rss[1])


def joining_key(fill: Fill) -> str:
    """Which requests may join a fill (RFC 9111 §3.5, proxy/policy/storable.py). Requests
    it turns away start a fill of their own, which waits for the key's lock (at most one
    fetch in flight) and then finds what the first stored, or fetches."""
    return sharing_key(fill.coalesce_key, fill.request_headers)


LOCK_POLL_FIRST = 0.005
LOCK_POLL_MAX = 0.05


class Fills:
    def __init__(
        self,
        origin: Origin,
        store: Store,
        *,
        settings: FillSettings,
        lock_wait: float,
        max_fills: int = 64,
        fill_queue: int = 256,
        max_rss: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.origin = origin
        self.clock = clock
        self.store = store
        self.settings = settings
        # How long a fill waits for another process's fill of the same key before it
        # fetches anyway: availability wins over deduplication past the origin deadline.
        self.lock_wait = lock_wait
        self.in_flight: dict[str, Fill] = {}
        # Backpressure instead of memory growth: fills beyond max_fills wait, at most
        # fill_queue of them; past that, and above max_rss, a new fill is refused.
        self._slots = asyncio.Semaphore(max_fills)
        self.most_started = max_fills + fill_queue
        self.max_rss = max_rss
        self._tasks: set[asyncio.Task[None]] = set()

    def join_or_start(self, fill: Fill) -> tuple[Fill, bool, int]:
        """The fill in flight for fill.coalesce_key, or `fill` started now.

        Returns the fill, whether it was started now (this request leads it), and the
        reader id the request must give back with `fill.leave`."""
        current = self.in_flight.get(joining_key(fill))
        # A purge taken since the fill started (in any worker) may cover what it fetched:
        # the commit will check; a request that comes now starts its own fill instead.
        if (
            current is not None
            and current.joinable
            and not self.store.purged_after(current.started)
        ):
            self.settings.tracing.fill_joined(current)
            return current, False, current.join()
        self._admit()
        metrics.FILLS_IN_FLIGHT.inc()
        reader = fill.join()
        self.in_flight[joining_key(fill)] = fill
        with self.settings.tracing.fill_started(fill):  # the task runs in the fill's span
            task = asyncio.get_running_loop().create_task(self._run(fill))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill, True, reader

    @property
    def running(self) -> int:
        """Fills started and not ended yet (waiting for a slot or a key's lock included)."""
        return len(self._tasks)

    def _admit(self) -> None:
        """Raise Overloaded when a new fill may not start now."""
        if self.max_rss is not None and resident_bytes(self.clock.monotonic()) > self.max_rss:
            raise Overloaded("memory above --max-rss; try again shortly")
        if self.running >= self.most_started:
            raise Overloaded("too many fills in flight; try again shortly")

    async def _run(self, fill: Fill) -> None:
        lock = self.store.key_lock(fill.coalesce_key)
        tracing = self.settings.tracing
        has_slot = False
        try:
            queued = self._slots.locked()  # every slot taken: this fill waits in the queue
            if queued:
                metrics.FILL_QUEUE.inc()
            try:
                with tracing.span("cache.fill_slot"):
                    await self._slots.acquire()
            finally:
                if queued:
                    metrics.FILL_QUEUE.dec()
            has_slot = True
            with tracing.span("cache.lock_wait") as span:
                waited = await self._acquire(lock)
                span.set_attribute("pixcache.lock.waited", waited)
            if waited and await self.store.identity(fill.coalesce_key) != fill.seen:
                return fill.retry_lookup()
            await fill.run(self.origin, self.store, self.settings, lock)
        except Exception as exc:  # noqa: BLE001 - a bug in one fill must not hang its waiters
            log.exception("fill_crashed", key=fill.key)
            fill.fail(InternalError("internal error", detail=describe(exc)))
        finally:
            metrics.FILLS_IN_FLIGHT.dec()
            if has_slot:
                self._slots.release()
            lock.release()
            if self.in_flight.get(joining_key(fill)) is fill:
                del self.in_flight[joining_key(fill)]
            fill.close()
            tracing.fill_ended(fill)

    async def _acquire(self, lock: KeyLock) -> bool:
        """Take the key's lock, polling while another process holds it. True if we waited."""
        clock = self.clock
        if lock.try_acquire():
            return False
        give_up = clock.monotonic() + self.lock_wait
        pause = LOCK_POLL_FIRST
        while clock.monotonic() < give_up:
            await clock.sleep(pause)
            pause = min(pause * 2, LOCK_POLL_MAX)
            if lock.try_acquire():
                return True
        log.warning("key_lock_wait_expired", waited=self.lock_wait)
        return True

    def invalidate_where(self, predicate: Callable[[Fill], bool]) -> None:
        """A purge: fills in flight that match must not commit what they fetched."""
        for fill in self.in_flight.values():
            if predicate(fill):
                fill.invalidated = True

    def invalidate(self, key: str) -> None:
        """RFC 9111 §4.4: fills in flight for this URL (its path and query, their key) must
        not commit what they fetched."""
        self.invalidate_where(lambda fill: fill.key == key)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
