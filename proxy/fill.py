"""A fill: one origin fetch for a key, streamed into a temp file that every waiting client
reads while it grows, then committed. At most one fill per key is in flight (invariant 3;
across processes, see proxy/fills.py).

The fill runs in a task of its own, so a client that disconnects never cancels it. When
the response turns out not to be shareable, it goes to the client that started the fill
(the leader) alone, and every other waiter fetches for itself. When it is shareable but
cannot be stored (too large, disk full, I/O error), the clients still get all of it: the
rest of the body is handed on through a bounded in-memory tail (proxy/tail.py), and its
download stops once the last of them has left (invariant 8)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable

import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from proxy import metrics
from proxy.errors import ProxyError
from proxy.fill_freshen import freshened, read_fd
from proxy.fill_head import (
    NOT_FORWARDED_ON_FILL,
    RETRY,
    FillHead,
    FillSettings,
    Stale,
    complete_if_whole,
    storage_fault,
)
from proxy.guard import ImageRejected
from proxy.origins.base import Origin, OriginResponse
from proxy.origins.body_check import BodyLimits
from proxy.policy.conditional import validators_for
from proxy.policy.storable import Verdict, may_store
from proxy.policy.targeted import effective_headers
from proxy.policy.vary import vary_fields, vary_values
from proxy.redact import redact
from proxy.tail import Tail
from storage.entry import EntryMeta
from storage.store import Store, VaryPlan
from storage.temp import TempBody

log = structlog.get_logger("pixcache.fill")

__all__ = ["NOT_FORWARDED_ON_FILL", "RETRY", "Fill", "FillHead", "FillSettings", "Stale"]


class Fill:
    def __init__(
        self,
        key: str,
        coalesce_key: str,
        plan: VaryPlan,
        request_headers: CIMultiDictProxy[str],
        fetch_headers: CIMultiDict[str],
        seen: tuple[int, int] | None = None,
        stale: Stale | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.key = key
        self.coalesce_key = coalesce_key
        self.plan = plan
        self.request_headers = request_headers
        self.fetch_headers = fetch_headers
        # The identity of the entry the lookup saw (None: none), to tell a newer commit.
        self.seen = seen
        # The stored response this fill revalidates (RFC 9111 §4.3), if any; owned here.
        self.stale = stale
        self.head: asyncio.Future[FillHead | object] = loop.create_future()
        # The leader's claim on a response that is not shareable.
        self.leader_slot: asyncio.Future[OriginResponse] = loop.create_future()
        self.temp: TempBody | None = None
        self.read_fd: int | None = None  # readers dup this; it outlives the temp file
        self.file_bytes = 0  # body bytes readers may take from the temp file
        self.tail = Tail()
        self.error: ProxyError | None = None
        self.finished = False
        self.committed = False
        self.waiters = 0
        # Set when the URL was invalidated during the fill: what it fetched predates that.
        self.invalidated = False
        # Called when the fill stops storing: it must then leave the registry.
        self.on_unstored: Callable[[Fill], None] = lambda fill: None
        self.abandoned = False  # nobody reads the body any more and none of it is stored
        self._task: asyncio.Task[None] | None = None  # the task running `run`
        self._progress = asyncio.Event()
        self._task_done = False
        self._claimed = False
        # Purges from this moment on cover what this fill fetches (storage checks at commit).
        self.started = time.time()

    # -- for readers -------------------------------------------------------------------
    def open_reader(self) -> int | None:
        """A descriptor of the temp file for one reader (None when there is no file)."""
        return None if self.read_fd is None else os.dup(self.read_fd)

    @property
    def joinable(self) -> bool:
        """A late request can still be given the whole body from offset 0."""
        return self.error is None and self.tail.dropped == 0

    async def wait_progress(self) -> None:
        """Return once more bytes arrived, or the fill ended (check `finished`)."""
        await self._progress.wait()

    def _notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    # -- the fill itself ---------------------------------------------------------------
    async def run(self, origin: Origin, store: Store, settings: FillSettings) -> None:
        self._task = asyncio.current_task()
        request_time = time.time()
        fetch_headers = self.fetch_headers
        if self.stale is not None:
            fetch_headers = CIMultiDict(fetch_headers)
            fetch_headers.extend(validators_for(CIMultiDict(self.stale.meta.headers)))
        try:
            response = await origin.fetch("GET", self.key, fetch_headers)
        except ProxyError as exc:
            return self._fail(exc)
        response_time, response = time.time(), complete_if_whole(response)
        if response.status == 304 and self.stale is not None:
            return await self._freshen(store, response, settings, request_time, response_time)
        fields = vary_fields(response.headers)
        policy_headers = effective_headers(response.headers, settings.targets)
        verdict = may_store(
            "GET",
            self.request_headers,
            response.status,
            policy_headers,
            default_ttl=settings.ttl_policy.default_ttl,
        )
        if self.stale is not None and response.status >= 500 and verdict.ok:
            # RFC 9111 §4.3.3: a 5xx to a revalidation may be handled "as if the server
            # failed to respond"; it must not replace the stored response that
            # stale-if-error may still serve.
            verdict = Verdict(False, "origin-error")
        head = FillHead(
            response.status,
            response.headers,
            response.content_length,
            verdict,
            fields,
            vary_values(fields, self.request_headers),
            response.timings,
        )
        body = response.body
        guard = settings.guard
        if guard is not None and guard.enabled:
            # Nothing reaches a client or the disk before the image header was judged.
            try:
                probe, body = await guard.inspect(response.headers.get("Content-Type", ""), body)
            except ProxyError as exc:
                if isinstance(exc, ImageRejected):
                    metrics.GUARD_REJECTIONS.labels("header").inc()
                await response.stop()  # the rest of a rejected body is never downloaded
                return self._fail(exc)
            if probe is not None and probe.problem and verdict.ok:
                head.stored, head.detail = False, "not-a-valid-image"
                log.warning("image_not_stored", key=self.key, reason=probe.problem)
        if not verdict.ok:  # not shareable: it goes to one client, judged all the same
            self.head.set_result(head)
            response.body = body
            return await self._hand_to_leader(response)
        if head.stored:
            head.detail = self._admit(store, response.content_length, settings.max_object_size)
            head.stored = not head.detail
        if not head.stored:
            self._stop_storing(head.detail)
        self.head.set_result(head)
        try:
            await self._stream(body, settings.max_object_size, response.limits)
        except ProxyError as exc:
            self._fail(exc)  # first: waiters learn it now, and nothing can cancel us after
            return await response.stop()
        except asyncio.CancelledError:
            if not self.abandoned or self._task is None:
                raise
            self._task.uncancel()  # our own stop (see `leave`), not a shutdown
        if self.abandoned:  # the last reader left a body that will not be stored
            log.info("fill_abandoned", key=self.key, at_byte=self.tail.end)
            self.finished = True
            self._notify()
            return await response.stop()  # the rest is never downloaded
        if self.temp is not None and guard is not None:
            problem = await guard.decodes_whole(self.temp.path)
            if problem:  # decode mode: a truncated or broken image is never stored
                metrics.GUARD_REJECTIONS.labels("decode").inc()
                log.warning("image_not_stored", key=self.key, reason=problem)
                self.temp.discard()
                self.temp = None
        if self.temp is not None:
            await self._commit(store, response, head, request_time, response_time)
        self.finished = True
        self._notify()

    def _admit(self, store: Store, length: int | None, max_object_size: int | None) -> str:
        """Open the temp file if this response may be stored; else the reason it may not."""
        if max_object_size is not None and length is not None and length > max_object_size:
            return "too-large"
        if not store.admits_new_entries():
            return "disk-low"
        try:
            self.temp = store.begin()
            self.read_fd = self.temp.dup_fd()
        except OSError as exc:
            return storage_fault(exc)
        return ""

    async def _stream(
        self, body: AsyncIterator[bytes], max_object_size: int | None, limits: BodyLimits | None
    ) -> None:
        async for chunk in body:
            if self.temp is not None:
                try:
                    await self.temp.append(chunk)
                except OSError as exc:
                    self._stop_storing(storage_fault(exc))
                else:
                    self.file_bytes = self.temp.written
                    if max_object_size is not None and self.temp.written > max_object_size:
                        self._stop_storing("too-large")
                    self._notify()
                    continue
            if not self.tail.readers:
                self.abandoned = True  # nobody reads it and nothing stores it (invariant 8)
                return
            try:
                # The origin waits while the slowest reader catches up, but not past the
                # total deadline: a reader that stops reading cannot hold the fill forever.
                await self.tail.put(chunk, None if limits is None else limits.total_at)
            except TimeoutError:
                assert limits is not None
                raise limits.timeout("total") from None
            self._notify()

    def _stop_storing(self, reason: str) -> None:
        """Keep serving this body to its readers, from memory past what the file holds."""
        if reason.startswith("storage-"):
            metrics.STORAGE_ERRORS.labels(reason.removeprefix("storage-")).inc()
            log.warning("storage_fault", key=self.key, reason=reason, at_byte=self.file_bytes)
        self.tail.start(self.file_bytes)
        if self.temp is not None:
            self.temp.discard()  # readers keep `read_fd`, so the bytes stay readable
            self.temp = None
        self.on_unstored(self)

    async def _commit(
        self,
        store: Store,
        response: OriginResponse,
        head: FillHead,
        request_time: float,
        response_time: float,
    ) -> None:
        assert self.temp is not None
        if self.invalidated:
            self.temp.discard()
            return
        meta = EntryMeta(
            key=self.key,
            status=response.status,
            headers=list(response.headers.items()),
            request_time=request_time,
            response_time=response_time,
            body_length=self.temp.written,
            sha256=self.temp.sha256,
            vary_fields=head.vary_fields,
            vary_values=head.vary_values,
        )
        try:
            await store.commit(self.temp, meta, self.plan, self.started)
            self.committed = True
        except Exception as exc:  # noqa: BLE001 - a failed commit only costs a future miss
            log.warning("commit_failed", key=self.key, error=repr(exc))
            self.temp.discard()

    async def _freshen(
        self,
        store: Store,
        response: OriginResponse,
        settings: FillSettings,
        request_time: float,
        response_time: float,
    ) -> None:
        """A 304: the stored response is still good. Update its headers (RFC 9111 §4.3.4),
        store that, and serve the stored body to every waiter."""
        assert self.stale is not None
        await response.close()
        head, meta = freshened(
            self.stale.meta,
            response,
            self.request_headers,
            settings.targets,
            request_time,
            response_time,
        )
        if meta is None:
            # Neither kept nor shared: the client that revalidated gets the stored body
            # with the new headers, every other waiter fetches for itself.
            await store.remove(self.coalesce_key)
            self.head.set_result(head)
            length = self.stale.meta.body_length
            body = read_fd(os.dup(self.stale.fd), length)
            stored = OriginResponse(head.status, head.headers, body, length, response.timings)
            return await self._hand_to_leader(stored)
        if not self.invalidated:
            try:
                await store.refresh(self.coalesce_key, meta, self.started)
                self.committed = True
            except Exception as exc:  # noqa: BLE001 - the waiters are served all the same
                log.warning("refresh_failed", key=self.key, error=repr(exc))
        self.read_fd = os.dup(self.stale.fd)
        self.file_bytes = meta.body_length
        self.head.set_result(head)
        self.finished = True
        self._notify()

    def claim_for_leader(self) -> OriginResponse:
        """The unshared response, for the client that started the fill (only it)."""
        self._claimed = True
        return self.leader_slot.result()

    async def release_leader(self) -> None:
        """The leader is done: a response it never claimed must not leak a connection."""
        if not self.leader_slot.done():
            self.leader_slot.cancel()
        elif not self.leader_slot.cancelled() and not self._claimed:
            self._claimed = True
            await self.leader_slot.result().close()

    def retry_lookup(self) -> None:
        self.finished = True
        self.head.set_result(RETRY)

    def _fail(self, exc: ProxyError) -> None:
        where = {
            name: value
            for name in ("bucket", "object_key", "reason")
            if (value := getattr(exc, name, None)) is not None
        }  # S3 errors say which bucket and key, and why
        log.warning(
            exc.event,
            key=self.key,
            origin=exc.origin,
            stage=exc.stage,
            error=exc.message,
            cause=redact(exc.detail) or None,
            **where,
        )
        self.error = exc
        if self.temp is not None:
            self.temp.discard()
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # retrieved: waiters may all be gone
        self.finished = True
        self._notify()

    async def _hand_to_leader(self, response: OriginResponse) -> None:
        self.finished = True
        if self.leader_slot.done():  # the leader went away; nobody may have this response
            await response.close()
        else:
            self.leader_slot.set_result(response)

    def join(self) -> int:
        """A reader joins (before or after the head arrived); give it back with `leave`."""
        return self.tail.join()

    def leave(self, reader: int) -> None:
        self.tail.leave(reader)
        if self.tail.readers:
            return
        if self._task_done:
            self._release_files()
        elif self.tail.active and not self.finished:
            # No reader is left, and none can join a fill that stopped storing (it left
            # the registry): stop it wherever it waits, for origin bytes or for room.
            self.abandoned = True
            if self._task is not None and self._task is not asyncio.current_task():
                self._task.cancel()

    def close(self) -> None:
        """The fill task ended: drop the temp file; the descriptors readers open theirs
        from stay until the last reader has left."""
        self._task_done = True
        if not self.finished:
            self._fail(ProxyError("pixcache is shutting down"))
        if self.temp is not None:
            self.temp.discard()
        if not self.tail.readers:
            self._release_files()

    def _release_files(self) -> None:
        if self.read_fd is not None:
            os.close(self.read_fd)
            self.read_fd = None
        if self.stale is not None:
            os.close(self.stale.fd)
            self.stale = None
