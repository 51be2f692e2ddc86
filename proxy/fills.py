"""The fills in flight, by coalescing key, and the tasks that run them.

Within a process, a request for a key with a fill in flight joins it. Across worker
processes, a fill first takes the key's lock (storage/keylock.py); a fill that had to wait
for another process's fill looks the key up again before fetching, and if that other fill
committed an entry, its requests are answered from it instead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from proxy import metrics
from proxy.backpressure import FillSlots
from proxy.errors import InternalError
from proxy.fill import Fill
from proxy.fill_head import FillSettings
from proxy.origins.base import Origin
from proxy.redact import describe
from storage import Store

log = structlog.get_logger("pixcache.fill")


class Fills:
    def __init__(
        self,
        origin: Origin,
        store: Store,
        *,
        settings: FillSettings,
        lock_wait: float,
        slots: FillSlots,
    ) -> None:
        self.origin = origin
        self.store = store
        self.settings = settings
        # How long a fill waits for another process's fill of the same key before it
        # fetches anyway: availability wins over deduplication past the origin deadline.
        self.lock_wait = lock_wait
        self.in_flight: dict[str, Fill] = {}
        self.slots = slots
        self._tasks: set[asyncio.Task[None]] = set()
        self.running = 0  # fills started and not ended or detached yet, queued ones included

    def join_or_start(self, fill: Fill) -> tuple[Fill, bool, int]:
        """The fill in flight for fill.coalesce_key, or `fill` started now.

        Returns the fill, whether it was started now (this request leads it), and the
        reader id the request must give back with `fill.leave`."""
        current = self.in_flight.get(fill.joining_key)
        # A purge taken since the fill started (in any worker) may cover what it fetched:
        # the commit will check; a request that comes now starts its own fill instead.
        if current and current.joinable and not self.store.purged_after(current.started):
            self.settings.tracing.fill_joined(current)
            fill.release_files()
            return current, False, current.join()
        try:
            self.slots.admit(self.running)
        except BaseException:  # Overloaded, or /proc unreadable for --max-rss
            fill.release_files()
            raise
        self.running += 1
        metrics.FILLS_IN_FLIGHT.inc()
        self.in_flight[fill.joining_key] = fill
        with self.settings.tracing.fill_started(fill):  # the task runs in the fill's span
            task = asyncio.get_running_loop().create_task(self._run(fill))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill, True, fill.join()

    async def _run(self, fill: Fill) -> None:
        lock = self.store.key_lock(fill.coalesce_key)
        has_slot, attached = False, True

        def detach() -> None:
            """The fill stops counting as in flight (at its end, or once its response is
            the leader's alone): its slot goes to the next fill, no request joins it."""
            nonlocal attached
            if attached:
                attached = False
                if has_slot:
                    self.slots.release()
                self.running -= 1
                metrics.FILLS_IN_FLIGHT.dec()
                if self.in_flight.get(fill.joining_key) is fill:
                    del self.in_flight[fill.joining_key]

        try:
            with self.settings.tracing.span("cache.fill_slot"):
                await self.slots.take()  # waits in the queue while every slot is taken
            has_slot = True
            with self.settings.tracing.span("cache.lock_wait") as span:
                waited = await lock.acquire(self.lock_wait, self.store.clock)
                span.set_attribute("pixcache.lock.waited", waited)
            if waited and not lock.held:
                log.warning("key_lock_wait_expired", waited=self.lock_wait)
            if waited and await self.store.identity(fill.coalesce_key) != fill.seen:
                return fill.retry_lookup()
            await fill.run(self.origin, self.store, self.settings, lock, detach)
        except Exception as exc:  # noqa: BLE001 - a bug in one fill must not hang its waiters
            log.exception("fill_crashed", key=fill.key)
            fill.fail(InternalError("internal error", detail=describe(exc)))
        finally:
            detach()
            lock.release()
            fill.close()
            self.settings.tracing.fill_ended(fill)

    def invalidate(self, predicate: Callable[[Fill], bool]) -> None:
        """A purge, or RFC 9111 §4.4's invalidation by an unsafe method: fills in flight
        that match must not commit what they fetched."""
        for fill in self.in_flight.values():
            if predicate(fill):
                fill.invalidated = True

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
