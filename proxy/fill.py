"""A fill: one origin fetch for a key, streamed into a temp file that every waiting client
reads while it grows, then committed; at most one per key in flight (invariant 3). It runs
in a task of its own (a client that leaves never cancels it) through the states of
proxy/fill_state.py. A response that is not stored reaches its readers (the leader alone,
if it is not shareable) through a bounded in-memory tail, and its download stops once the
last of them has left (invariant 8)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from proxy import metrics
from proxy.errors import LengthMismatch, ProxyError
from proxy.fill_body import FillBody
from proxy.fill_head import FillHead, FillSettings
from proxy.fill_state import FINAL, HEAD_KNOWN, JOINABLE, State, check_transition
from proxy.observe import log_fill_error
from proxy.origins.base import Origin, OriginResponse
from proxy.origins.body_check import BodyLimits
from proxy.policy.conditional import validators_for
from proxy.policy.ranges import as_complete
from proxy.policy.storable import sharing_key
from proxy.policy.transitions import Freshen, freshened, on_response
from proxy.policy.vary import vary_fields, vary_values
from storage import SYSTEM_CLOCK, Clock, EntryMeta, KeyLock, OpenEntry, StorageFault, Store, Writer

log = structlog.get_logger("pixcache.fill")


class Fill:
    def __init__(
        self,
        key: str,
        coalesce_key: str,
        request_headers: CIMultiDictProxy[str],
        fetch_headers: CIMultiDict[str],
        seen: tuple[int, int] | None = None,
        stale: OpenEntry | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.key = key
        self.coalesce_key = coalesce_key
        self.request_headers = request_headers
        # Which requests may join it (RFC 9111 §3.5): those it turns away start a fill of
        # their own, which waits for the key's lock, then finds what this one stored.
        self.joining_key = sharing_key(coalesce_key, request_headers)
        self.fetch_headers = fetch_headers  # the fill's own: validators are added to it
        # The identity of the entry the lookup saw (None: none), to tell a newer commit.
        self.seen = seen
        self.stale = stale  # the stored response it revalidates (RFC 9111 §4.3); owned here
        self._now = clock.now
        self.state = State.QUEUED  # changed only by `_to`, along proxy/fill_state.py's table
        self.head: FillHead | None = None  # what the origin answered, once known
        self.body = FillBody()
        # Set when the URL was invalidated during the fill: what it fetched predates that.
        self.invalidated = False
        # Purges from this moment on cover what this fill fetches (storage checks at commit).
        self.started = self._now()
        self._changed = asyncio.Event()  # set (and replaced) on every change of state
        self._unread = False  # the last reader left a body that is not stored
        # Set while `run` runs (the key's lock is let go once nothing will commit).
        self._task: asyncio.Task[None] | None = None
        self._writer: Writer
        self._lock: KeyLock
        self._detach: Callable[[], None]
        self._task_done = False

    def _to(self, state: State, error: ProxyError | None = None) -> None:
        """Move along the table; a final state ends the body (with `error`, if failed)."""
        self.state = check_transition(self.state, state)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if state in FINAL:
            self.body.end(error)

    # -- for the handler -----------------------------------------------------------------
    @property
    def joinable(self) -> bool:
        """JOINABLE, and not invalidated since it started (a later request must not get it)."""
        return self.state in JOINABLE and not self.invalidated

    def join(self) -> int:
        """A reader joins at offset 0, before or after the head; give it back with `leave`."""
        return self.body.tail.join()

    async def wait_head(self) -> FillHead | None:
        """What the origin answered; None when another process committed the key while
        this fill waited for its lock (look it up again). Raises the fill's error if it
        failed before a head arrived."""
        await self._reach(HEAD_KNOWN)
        if self.head is not None or self.state is State.RETRY:
            return self.head
        assert self.body.error is not None
        raise self.body.error

    async def wait_end(self) -> None:
        """Return once the fill reached a final state (committed, failed, abandoned...)."""
        await self._reach(FINAL)

    async def _reach(self, states: frozenset[State]) -> None:
        while self.state not in states:
            await self._changed.wait()

    def leave(self, reader: int) -> None:
        self.body.tail.leave(reader)
        if self.body.tail.readers:
            return
        if self._task_done:
            self.release_files()
        elif self.state in (State.PASSING, State.HANDED):
            # No reader is left, and none can join a fill that stopped storing: stop it
            # wherever it waits, for origin bytes or for room.
            self._unread = True
            if self._task is not None and self._task is not asyncio.current_task():
                self._task.cancel()

    # -- the fill itself, owned by one task from QUEUED to a final state ----------------
    def retry_lookup(self) -> None:
        self._to(State.RETRY)

    async def run(
        self,
        origin: Origin,
        store: Store,
        settings: FillSettings,
        lock: KeyLock,
        detach: Callable[[], None],
    ) -> None:
        """Fetch, then store or pass on; `detach` (Fills._run) once the response turns out
        to be the leader's alone."""
        self._task, self._lock, self._detach = asyncio.current_task(), lock, detach
        self._to(State.FETCHING)
        # However the fill ends (stored, failed, cancelled), its temp file goes with it.
        async with store.writer(self.key) as self._writer:
            try:
                await self._fetch(origin, store, settings)
            except ProxyError as exc:  # from the origin or the guard, before any body
                self.fail(exc)

    async def _fetch(self, origin: Origin, store: Store, settings: FillSettings) -> None:
        request_time = self._now()
        if self.stale is not None:  # RFC 9111 §4.3.1: ask conditionally
            self.fetch_headers.extend(validators_for(CIMultiDict(self.stale.meta.headers)))
        response = await origin.fetch("GET", self.key, self.fetch_headers)
        times = (request_time, self._now())
        complete = as_complete(response.status, response.headers, response.content_length)
        if complete is not None:  # RFC 9111 §3.4: a 206 of the whole is the 200 it is
            response = replace(response, status=200, headers=CIMultiDictProxy(complete))
        outcome = on_response(
            self.stale is not None,
            response.status,
            response.headers,
            self.request_headers,
            settings.policy,
        )
        if isinstance(outcome, Freshen):
            return await self._freshen(store, response, settings, times)
        fields = vary_fields(response.headers)
        head = FillHead(
            response.status,
            response.headers,
            response.content_length,
            outcome.verdict,
            fields,
            vary_values(fields, self.request_headers),
            response.timings,
        )
        body, problem = response.body, ""
        if settings.guard is not None and settings.guard.enabled:
            with settings.tracing.span("image.guard"):
                body, problem, head.image = await settings.guard.judge(response)
        if head.shared and problem:  # served, but a broken-looking image is never stored
            head.detail = "not-a-valid-image"
            log.warning("image_not_stored", key=self.key, reason=problem)
        elif head.shared:  # (an Unshare is not: it goes to its leader alone, judged all the same)
            head.detail = self._admit(store, response.content_length, settings.max_object_size)
        head.stored = head.shared and not head.detail  # `detail`: why a shared one is not
        self.head = head
        self.body.declared = response.content_length
        if head.stored:
            self._to(State.STORING)
        elif head.shared:
            self._stop_storing(State.PASSING)
        else:
            self._stop_storing(State.HANDED)
            self._detach()
        try:
            await self._stream(body, response.limits, settings.max_object_size)
        except ProxyError as exc:
            self.fail(exc)  # first: waiters learn it now, and nothing can cancel us after
            self._writer.discard()  # now, not once the origin connection is closed
            return await response.stop()
        except asyncio.CancelledError:
            if not self._unread or self._task is None:
                raise
            self._task.uncancel()  # our own stop (see `leave`), not a shutdown
        if self._unread:
            log.info("fill_abandoned", key=self.key, at_byte=self.body.tail.end)
            self._to(State.ABANDONED)
            return await response.stop()  # the rest is never downloaded
        self.body.seal()
        if self.state is State.STORING:
            await self._keep(head, settings, times)
            self._to(State.COMPLETE)
        else:
            self._to(State.PASSED)

    def _admit(self, store: Store, length: int | None, max_object_size: int | None) -> str:
        """Open the temp file if this response may be stored; else the reason it may not."""
        if max_object_size is not None and length is not None and length > max_object_size:
            return "too-large"
        if not store.admits_new_entries():
            return "disk-low"
        try:
            self._writer.open()
        except StorageFault as fault:
            self._count_fault(fault)
            return fault.reason
        self.body.read_fd = self._writer.dup_fd()
        return ""

    async def _stream(
        self, body: AsyncIterator[bytes], limits: BodyLimits | None, max_object_size: int | None
    ) -> None:
        """The body into the temp file (or the tail), exactly `declared` bytes of it when
        a length was declared: a byte past it, or an end short of it, fails the fill, so no
        adapter can have a wrong-length body stored or sent as complete (invariant 2)."""
        declared = self.body.declared  # the length readers hold its last byte back for
        writer = self._writer
        received = 0
        async for chunk in body:
            received += len(chunk)
            if declared is not None and received > declared:
                raise LengthMismatch(f"origin body longer than its Content-Length {declared}")
            if writer.storing:
                try:
                    await writer.append(chunk)
                except StorageFault as fault:
                    self._count_fault(fault)
                    self._stop_storing()
                else:
                    self.body.file_bytes = writer.written
                    self.body.notify()
                    if max_object_size is not None and writer.written > max_object_size:
                        self._stop_storing()
                    continue
            tail = self.body.tail
            if not tail.readers:
                self._unread = True  # nobody reads it and nothing stores it (invariant 8)
                return
            try:
                # The origin waits while the slowest reader catches up, but not past the
                # total deadline: a reader that stops reading cannot hold the fill forever.
                await tail.put(chunk, None if limits is None else limits.total_at)
            except TimeoutError:
                assert limits is not None
                raise limits.timeout("total") from None
            self.body.notify()
        if declared is not None and received < declared:
            raise LengthMismatch(f"origin body of {received} bytes, Content-Length {declared}")

    def _stop_storing(self, state: State = State.PASSING) -> None:
        """Keep serving this body to its readers, from memory past what the file holds."""
        self.body.tail.start(self.body.file_bytes)
        self._writer.discard()  # readers keep `read_fd`, so the bytes stay readable
        self._to(state)
        self._lock.release()  # nothing will be committed: other processes need not wait

    def _count_fault(self, fault: StorageFault) -> None:
        metrics.STORAGE_ERRORS.labels(fault.kind).inc()
        log.warning(
            "storage_fault", key=self.key, reason=fault.reason, at_byte=self.body.file_bytes
        )

    async def _keep(
        self, head: FillHead, settings: FillSettings, times: tuple[float, float]
    ) -> None:
        """The whole body is in the temp file: commit it, unless the image does not decode
        or the URL was invalidated meanwhile (then `run`'s writer removes it)."""
        writer = self._writer
        if settings.guard is not None and settings.guard.decodes and head.image:
            with settings.tracing.span("image.decode"):
                problem = await settings.guard.decodes_whole(writer.path, head.headers)
            if problem:  # decode mode: a truncated or broken image is never stored
                metrics.GUARD_REJECTIONS.labels("decode").inc()
                log.warning("image_not_stored", key=self.key, reason=problem)
                return
        if self.invalidated:
            return
        meta = EntryMeta(
            key=self.key,
            status=head.status,
            headers=list(head.headers.items()),
            request_time=times[0],
            response_time=times[1],
            body_length=writer.written,
            sha256=writer.sha256,
            vary_fields=head.vary_fields,
            vary_values=head.vary_values,
        )
        try:
            with settings.tracing.span("cache.commit"):
                await writer.commit(meta, self.started)  # the temp file is gone either way
        except Exception as exc:  # noqa: BLE001 - a failed commit only costs a future miss
            log.warning("commit_failed", key=self.key, error=repr(exc))

    async def _freshen(
        self,
        store: Store,
        response: OriginResponse,
        settings: FillSettings,
        times: tuple[float, float],
    ) -> None:
        """A 304: the stored response is still good. Store it with its headers updated
        (proxy/policy/transitions.freshened) and serve the stored body to every waiter."""
        assert self.stale is not None
        await response.close()
        old = self.stale.meta
        headers, verdict = freshened(
            old.status,
            CIMultiDict(old.headers),
            response.headers,
            self.request_headers,
            settings.policy,
        )
        head = FillHead(
            old.status,
            CIMultiDictProxy(CIMultiDict(headers)),
            old.body_length,
            verdict,
            old.vary_fields,
            old.vary_values,
            response.timings,
            stored=verdict.ok,
            detail="revalidated" if verdict.ok else "",
            origin_status=response.status,
        )
        if not verdict.ok:
            # Neither kept nor shared: the client that revalidated gets the stored body
            # with the new headers, every other waiter fetches for itself.
            await store.remove(self.coalesce_key)
        elif not self.invalidated:
            meta = replace(old, headers=headers, request_time=times[0], response_time=times[1])
            try:
                await store.refresh(self.coalesce_key, meta, self.started)
            except Exception as exc:  # noqa: BLE001 - the waiters are served all the same
                log.warning("refresh_failed", key=self.key, error=repr(exc))
        self.body.read_fd = os.dup(self.stale.fd)
        self.body.file_bytes = old.body_length
        self.head = head  # only now: a failure before this must not look like a head
        self._to(State.COMPLETE)

    def fail(self, exc: ProxyError) -> None:
        """The fill failed: every reader gets `exc` (a fill already ended keeps its end)."""
        if self.state not in FINAL:
            log_fill_error(self.key, exc)
            self._to(State.FAILED, exc)

    def close(self) -> None:
        """The fill task ended (`run` removed the temp file): readers' descriptors stay till
        they leave."""
        self._task_done = True
        self.fail(ProxyError("pixcache is shutting down"))  # if it has not ended yet
        if not self.body.tail.readers:
            self.release_files()

    def release_files(self) -> None:
        """Close what the fill holds open: once its task ended and its last reader left, or
        at once if it never started (its key's fill was in flight, or no fill may start)."""
        if self.body.read_fd is not None:  # the fill opened it (`_admit`, `_freshen`)
            os.close(self.body.read_fd)
            self.body.read_fd = None
        if self.stale is not None:
            os.close(self.stale.fd)
            self.stale = None
