"""A fill: one origin fetch for a key, streamed into a temp file that every waiting client
reads while it grows, then committed. At most one fill per key is in flight (invariant 3).

The fill runs in a task of its own, so a client that disconnects never cancels it. When
the response turns out not to be shareable, it goes to the client that started the fill
(the leader) alone, and every other waiter fetches for itself."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import ProxyError
from proxy.origins.base import Origin, OriginResponse
from proxy.policy.storable import Verdict, may_store
from proxy.policy.vary import vary_fields, vary_values
from storage.entry import EntryMeta
from storage.layout import variant_key_hash
from storage.store import Store
from storage.temp import TempBody

log = structlog.get_logger("pixcache.fill")

# Request fields a fill never forwards: it fetches the whole, unconditional object for
# everyone, whatever the client that started it asked for.
NOT_FORWARDED_ON_FILL = frozenset(
    {"range", "if-range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since"}
)


@dataclass(frozen=True)
class VaryPlan:
    """Where a fill stores its response: the primary key, and the Vary marker seen there."""

    primary: str
    marker_fields: tuple[str, ...] = ()
    marker_id: str = ""


@dataclass
class FillHead:
    status: int
    headers: CIMultiDictProxy[str]
    content_length: int | None
    verdict: Verdict
    vary_fields: tuple[str, ...]
    vary_values: dict[str, str | None]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def shared(self) -> bool:
        return self.verdict.ok


class Fill:
    def __init__(
        self,
        key: str,
        coalesce_key: str,
        plan: VaryPlan,
        request_headers: CIMultiDictProxy[str],
        fetch_headers: CIMultiDict[str],
    ) -> None:
        loop = asyncio.get_running_loop()
        self.key = key
        self.coalesce_key = coalesce_key
        self.plan = plan
        self.request_headers = request_headers
        self.fetch_headers = fetch_headers
        self.head: asyncio.Future[FillHead] = loop.create_future()
        # The leader's claim on a response that is not shareable.
        self.leader_slot: asyncio.Future[OriginResponse] = loop.create_future()
        self.temp: TempBody | None = None
        self.error: ProxyError | None = None
        self.finished = False
        self.committed = False
        self.waiters = 0
        # Set when the URL was invalidated during the fill: what it fetched predates that.
        self.invalidated = False
        self._progress = asyncio.Event()

    # -- for readers -------------------------------------------------------------------
    async def wait_progress(self) -> None:
        """Return once more bytes were written, or the fill ended (check `finished`)."""
        await self._progress.wait()

    def _notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    # -- the fill itself ---------------------------------------------------------------
    async def run(self, origin: Origin, store: Store) -> None:
        request_time = time.time()
        try:
            response = await origin.fetch("GET", self.key, self.fetch_headers)
        except ProxyError as exc:
            return self._fail(exc)
        response_time = time.time()
        fields = vary_fields(response.headers)
        verdict = may_store("GET", self.request_headers, response.status, response.headers)
        head = FillHead(
            response.status,
            response.headers,
            response.content_length,
            verdict,
            fields,
            vary_values(fields, self.request_headers),
            response.timings,
        )
        if not verdict.ok:
            self.head.set_result(head)
            return await self._hand_to_leader(response)
        try:
            self.temp = store.begin()
        except OSError as exc:
            log.warning("temp_file_failed", key=self.key, error=str(exc))
            self.head.set_result(_unshared(head, "storage"))
            return await self._hand_to_leader(response)
        self.head.set_result(head)
        try:
            async for chunk in response.body:
                await self.temp.append(chunk)
                self._notify()
        except ProxyError as exc:
            return self._fail(exc)
        except OSError as exc:
            # The disk failed under the temp file; readers cannot continue from it.
            return self._fail(ProxyError(f"cache write failed: {exc.strerror}"))
        meta = EntryMeta(
            key=self.key,
            status=response.status,
            headers=list(response.headers.items()),
            request_time=request_time,
            response_time=response_time,
            body_length=self.temp.written,
            sha256=self.temp.sha256,
            vary_fields=fields,
            vary_values=head.vary_values,
        )
        await self._commit(store, meta)
        self.finished = True
        self._notify()

    async def _commit(self, store: Store, meta: EntryMeta) -> None:
        assert self.temp is not None
        plan = self.plan
        if self.invalidated:
            self.temp.discard()
            return
        try:
            if not meta.vary_fields:
                await self.temp.commit(meta, store.final_path(plan.primary))
            else:
                vary_id = plan.marker_id
                if meta.vary_fields != plan.marker_fields:
                    vary_id = uuid.uuid4().hex
                variant = variant_key_hash(plan.primary, vary_id, meta.vary_values)
                await self.temp.commit(meta, store.final_path(variant))
                if vary_id != plan.marker_id:
                    await _commit_marker(store, plan.primary, meta, vary_id)
            self.committed = True
        except Exception as exc:  # noqa: BLE001 - a failed commit only costs a future miss
            log.warning("commit_failed", key=self.key, error=repr(exc))
            self.temp.discard()

    def claim_for_leader(self) -> OriginResponse:
        """The unshared response, for the client that started the fill (only it)."""
        return self.leader_slot.result()

    def release_leader(self) -> None:
        """The leader is done: a response it never claimed must not leak a connection."""
        if not self.leader_slot.done():
            self.leader_slot.cancel()

    def _fail(self, exc: ProxyError) -> None:
        log.warning(
            exc.event,
            key=self.key,
            origin=exc.origin,
            stage=getattr(exc, "stage", None),
            error=exc.message,
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

    def discard(self) -> None:
        """Abandon a fill (shutdown): drop its temp file, wake its readers with an error."""
        if not self.finished:
            self._fail(ProxyError("pixcache is shutting down"))


def _unshared(head: FillHead, reason: str) -> FillHead:
    return FillHead(
        head.status,
        head.headers,
        head.content_length,
        Verdict(False, reason),
        head.vary_fields,
        head.vary_values,
        head.timings,
    )


async def _commit_marker(store: Store, primary: str, meta: EntryMeta, vary_id: str) -> None:
    temp = store.begin()
    marker = EntryMeta(
        key=meta.key,
        status=0,
        headers=[],
        request_time=meta.request_time,
        response_time=meta.response_time,
        body_length=0,
        sha256=temp.sha256,
        vary_fields=meta.vary_fields,
        is_vary_marker=True,
        vary_id=vary_id,
    )
    try:
        await temp.commit(marker, store.final_path(primary))
    finally:
        temp.discard()


class Fills:
    """The fills in flight, by coalescing key, and the tasks that run them."""

    def __init__(self, origin: Origin, store: Store) -> None:
        self.origin = origin
        self.store = store
        self.in_flight: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def join_or_start(self, fill: Fill) -> tuple[Fill, bool]:
        """The fill in flight for fill.coalesce_key, or `fill` started now. True if started."""
        current = self.in_flight.get(fill.coalesce_key)
        if current is not None:
            current.waiters += 1
            return current, False
        self.in_flight[fill.coalesce_key] = fill
        task = asyncio.get_running_loop().create_task(self._run(fill))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill, True

    async def _run(self, fill: Fill) -> None:
        try:
            await fill.run(self.origin, self.store)
        except asyncio.CancelledError:
            fill.discard()
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in one fill must not hang its waiters
            log.exception("fill_crashed", key=fill.key)
            fill._fail(ProxyError(f"internal error: {exc!r}"))
        finally:
            if self.in_flight.get(fill.coalesce_key) is fill:
                del self.in_flight[fill.coalesce_key]

    def invalidate(self, primary: str) -> None:
        """RFC 9111 §4.4: fills in flight for this URL must not commit what they fetched."""
        for fill in self.in_flight.values():
            if fill.plan.primary == primary:
                fill.invalidated = True

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
