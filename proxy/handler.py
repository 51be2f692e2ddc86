"""The request path, top to bottom: key → lookup → decide → serve a hit, or fill and stream.

Everything it calls is small and named for what it does: storage.Store finds and opens
entries, proxy.policy decides, proxy.fill fetches once per key, proxy.respond writes."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, replace

import structlog
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import NotCached as NotCachedError
from proxy.errors import Overloaded, ProxyError
from proxy.fill import Fill
from proxy.fill_head import FillHead
from proxy.fills import Fills
from proxy.hot import HotHits
from proxy.observe import PENDING_KEY, Served, record_request
from proxy.origins.base import Origin
from proxy.passthrough import forwarded_headers, relay_response, send_error, send_internal_error
from proxy.policy.cache_status import CacheStatus
from proxy.policy.conditional import NOT_FORWARDED_ON_FILL
from proxy.policy.freshness import Timing, current_age
from proxy.policy.invalidation import invalidated_targets
from proxy.policy.reuse import has_validators
from proxy.policy.transitions import (
    DEFAULT_POLICY,
    Bypass,
    NotCached,
    PolicyOptions,
    Serve,
    StoredView,
    Validate,
    on_request,
)
from proxy.policy.vary import RequestVary, vary_matches
from proxy.request_key import AS_RECEIVED, RequestKeying
from proxy.respond import (
    RESPONSE_KEY,
    ClientGone,
    client_headers,
    send_entry,
    send_filling,
)
from proxy.tracing import Tracing
from proxy.x_accel import nginx_may_send, send_by_nginx
from storage import SYSTEM_CLOCK, Clock, OpenEntry, Store, primary_key_hash

log = structlog.get_logger("pixcache.request")

# RFC 9110 §9.2.1: the safe methods. Anything else invalidates (RFC 9111 §4.4).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CACHED_METHODS = frozenset({"GET", "HEAD"})
# Lookups per request: a fill that waited for another process's fill looks up again.
LOOKUPS = 3


@dataclass
class Lookup:
    entry: OpenEntry | None
    coalesce_key: str  # where the response is stored: a variant's key if it varies
    fwd: str  # why we go forward if we do: uri-miss, vary-miss, stale, request
    stale_if_error: float = 0.0  # the entry may still serve if the origin fails

    def take(self) -> OpenEntry:
        """Hand the open entry on (its new owner closes it)."""
        entry, self.entry = self.entry, None
        assert entry is not None
        return entry


class Handler:
    def __init__(
        self,
        store: Store,
        origin: Origin,
        fills: Fills,
        *,
        policy: PolicyOptions = DEFAULT_POLICY,
        x_accel_redirect: str | None = None,
        unkeyed_fields: frozenset[str] = frozenset(),
        hot: HotHits | None = None,
        tracing: Tracing | None = None,
        keying: RequestKeying = AS_RECEIVED,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.clock = clock
        self._now = clock.now  # bound once: read on every request
        self.origin = origin
        self.fills = fills
        self.policy = policy  # what the caching rules read of the config
        self.x_accel_redirect = x_accel_redirect  # nginx's internal location of bodies/
        # What a fill, fetched once for every client of the key, never forwards.
        self.not_forwarded_on_fill = NOT_FORWARDED_ON_FILL | unkeyed_fields
        # Hits prepared by an earlier hit of this worker (off when nginx sends the bodies).
        self.hot = hot if not x_accel_redirect else None
        # None while tracing is off: the hot path never looks, the full one checks this.
        self.tracing = tracing
        self.keying = keying  # the key rule: the target and Accept as keyed and fetched
        # The image guard judges what GETs fetch: they ask only for codings it reads.
        guard = fills.settings.guard
        self.guarded = guard is not None and guard.enabled

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if self.hot is not None and (sent := await self.hot.answer(request, self.store.note_use)):
            return sent
        began = time.monotonic()
        served = Served(500, CacheStatus(detail="internal"))
        try:
            # From here on the request is the keyed one (docs/cache-key.md); a hot hit above
            # needs none: hot entries are kept under targets the rule leaves as they are.
            request = self.keying.keyed(request)
            served = await self.handle(request)
        except ClientGone:
            served = request.get(PENDING_KEY) or served
            served.status, served.client_gone = 499, True
        except asyncio.CancelledError:
            # aiohttp cancels a handler whose client went away; a response already under
            # way is recorded as what it was (its fill goes on in a task of its own).
            served = request.get(PENDING_KEY) or served
            served.client_gone = True
            raise
        except Exception as exc:  # noqa: BLE001 - one request's bug must not cost a 500 without Cache-Status
            log.exception("handler_failed", path=request.rel_url.raw_path_qs)
            served = await send_internal_error(request, exc)
        finally:
            record_request(request, served, began)
            if self.tracing is not None:
                self.tracing.served(served)
        # The response was written already (or the connection is gone); aiohttp's own
        # prepare/write_eof on it are then no-ops.
        return request.get(RESPONSE_KEY) or web.Response(status=served.status)

    async def handle(self, request: web.Request) -> Served:
        key = request.rel_url.raw_path_qs  # the origin comes from config, never the request
        if request.method not in CACHED_METHODS:
            return await self.forward(request, key)
        primary = primary_key_hash(key)
        for _ in range(LOOKUPS):
            if self.tracing is None:
                found = await self.lookup(primary, request)
            else:
                found = await self.tracing.lookup(self.lookup(primary, request))
            try:
                served = await self.answer(request, key, primary, found)
            finally:
                if found.entry is not None:  # not handed on to be served
                    os.close(found.entry.fd)
            if served is not None:
                return served
        # Other processes kept replacing the entry under us; stop deduplicating this one.
        return await self.relay(request, key, CacheStatus(fwd=found.fwd, detail="contended"))

    async def answer(
        self, request: web.Request, key: str, primary: str, found: Lookup
    ) -> Served | None:
        """Serve from the entry found, or go forward; None to look up again."""
        view = None if found.entry is None else stored_view(found.entry)
        outcome = on_request(view, request.headers, self._now(), self.policy, absent=found.fwd)
        if isinstance(outcome, Serve):
            assert found.entry is not None
            self.store.note_use(primary)
            self.store.note_use(found.coalesce_key)
            cache = CacheStatus(hit=True, ttl=outcome.ttl)
            if outcome.refresh:
                # RFC 5861 §3: serve stale now, revalidate in the background.
                await self.refresh_in_background(request, key, found)
                cache = CacheStatus(hit=True, ttl=outcome.ttl, detail="stale-while-revalidate")
            elif self.hot is not None and found.coalesce_key == primary:
                self.hot.remember(request, key, primary, found.entry, self.store.head_path(primary))
            return await self.serve_hit(request, found.take(), cache)
        if isinstance(outcome, Bypass):
            return await self.relay(
                request, key, CacheStatus(fwd=outcome.fwd, detail=outcome.detail)
            )
        found.fwd = outcome.fwd
        if isinstance(outcome, NotCached):
            return await send_error(
                request, NotCachedError("only-if-cached"), CacheStatus(fwd=found.fwd)
            )
        if isinstance(outcome, Validate):
            found.stale_if_error = outcome.stale_if_error
        # A request with Authorization fills too (forwarding it): its response is stored
        # and shared only where §3.5 allows (may_store), else it goes to this client
        # alone; only requests with the same credentials join its fill (Fill.joining_key).
        return await self.fill_and_serve(request, key, found)

    async def lookup(self, primary: str, request: web.Request) -> Lookup:
        """The stored entry that matches the request: the stored variant it selects, if
        the URL's response varies (§4.1)."""
        found = await self.store.lookup(primary, RequestVary(request.headers))
        return Lookup(found.entry, found.key_hash, found.miss)

    async def serve_hit(self, request: web.Request, entry: OpenEntry, cache: CacheStatus) -> Served:
        meta = entry.meta
        try:
            timing = Timing(meta.request_time, meta.response_time)
            stored = CIMultiDict(meta.headers)
            age = int(current_age(stored, timing, self._now()))
            headers = client_headers(stored, cache.render(), age=age)
            by_nginx = bool(self.x_accel_redirect) and nginx_may_send(request, meta.status, headers)
            if by_nginx:
                body = entry.body_path
                uri = f"{self.x_accel_redirect}{body.parent.name}/{body.name}"
                status = await send_by_nginx(request, headers, uri)
            else:
                # entry.source: the checked bytes of a small body, else the body file.
                status = await send_entry(
                    request, meta.status, headers, entry.source, meta.body_length
                )
        except ClientGone:
            return Served(499, cache, client_gone=True)
        finally:
            os.close(entry.fd)
        sent = meta.body_length if request.method == "GET" and status == 200 else 0
        return Served(status, cache, body_bytes=sent, by_nginx=by_nginx)

    async def refresh_in_background(self, request: web.Request, key: str, found: Lookup) -> None:
        assert found.entry is not None
        try:
            fill, _, reader = self.fills.join_or_start(self._fill_for(request, key, found))
        except Overloaded:
            return  # the stale entry is served all the same; a later request refreshes it
        fill.leave(reader)  # nobody reads this one; it only refreshes the entry

    def _fill_for(self, request: web.Request, key: str, found: Lookup) -> Fill:
        fetch_headers = forwarded_headers(
            request, drop=self.not_forwarded_on_fill, readable_codings_only=self.guarded
        )
        entry = found.entry
        seen = entry.identity if entry is not None else None
        stale = None
        if entry is not None and has_validators(CIMultiDict(entry.meta.headers)):
            # RFC 9111 §4.3.1: validate it, on a descriptor of the fill's own (it may outlive
            # this request), without the body bytes the lookup may have read
            stale = replace(entry, fd=os.dup(entry.fd), checked=None)
        return Fill(
            key, found.coalesce_key, request.headers, fetch_headers, seen, stale, clock=self.clock
        )

    async def fill_and_serve(self, request: web.Request, key: str, found: Lookup) -> Served | None:
        """Join or start the key's fill and stream its response; None when another process
        committed the key meanwhile and the caller should look it up again."""
        if await self._wait_to_validate(request, found.coalesce_key):
            return None
        try:
            fill, leader, reader = self.fills.join_or_start(self._fill_for(request, key, found))
        except Overloaded as exc:
            if found.stale_if_error:
                return await self.serve_stale_on_error(request, found, None)
            return await send_error(request, exc, CacheStatus(fwd=found.fwd))
        try:
            try:
                head = await fill.wait_head()
            except ProxyError as exc:
                if found.stale_if_error:
                    return await self.serve_stale_on_error(request, found, None)
                cache = CacheStatus(fwd=found.fwd, collapsed=not leader)
                return await send_error(request, exc, cache)
            if head is None:  # another process committed the key: look it up again
                return None
            if head.status >= 500 and found.stale_if_error:
                return await self.serve_stale_on_error(request, found, head.status)
            fwd_status = head.origin_status or head.status
            if not head.shared:  # §3.5: the fill hands it to its leader alone, storing nothing
                cache = CacheStatus(
                    fwd=found.fwd or "bypass", fwd_status=fwd_status, detail=head.verdict.reason
                )
                if not leader:
                    fill.leave(reader)  # never read: the leader's stream must not wait for it
                    return await self.relay(request, key, cache)
            elif not leader and not vary_matches(
                head.vary_fields, head.vary_values, request.headers
            ):
                # The response varies on a field where we differ from the leader (§4.1).
                if head.stored and "*" not in head.vary_fields:
                    # Its fill stores the Vary marker; looked up again after it, this
                    # request finds its own variant, and one fill for all requests like it.
                    fill.leave(reader)  # never read: the fill must not wait for this one
                    await fill.wait_end()  # the fill's own deadlines bound this
                    return None
                return await self.relay(request, key, CacheStatus(fwd="vary-miss"))
            else:
                cache = CacheStatus(
                    fwd=found.fwd,
                    fwd_status=fwd_status,
                    stored=head.stored,
                    collapsed=not leader,
                    ttl=self._ttl_of(head),
                    detail=head.detail or None,
                )
            headers = client_headers(head.headers, cache.render())
            if head.status == 200 and head.stored:
                # RFC 9110 §14.3: ranges of it will be served, as its hits say (nginx in
                # front caches ranges only of responses that carry this).
                headers.setdefault("Accept-Ranges", "bytes")
            full_body = request.method == "GET" and head.status == 200
            request[PENDING_KEY] = Served(
                head.status, cache, head.timings, body_bytes=(head.content_length or 0) * full_body
            )
            try:
                status = await send_filling(
                    request, head.status, headers, head.content_length, fill, reader
                )
            except ProxyError as exc:
                return Served(head.status, cache, head.timings, exc)
            full_body = request.method == "GET" and status == 200
            sent = (head.content_length or 0) if full_body else 0
            return Served(status, cache, head.timings, body_bytes=sent)
        finally:
            fill.leave(reader)

    async def serve_stale_on_error(
        self, request: web.Request, found: Lookup, status: int | None
    ) -> Served:
        """RFC 5861 §4 (or the operator's grace): the origin failed, the stale entry serves."""
        assert found.entry is not None
        cache = CacheStatus(
            hit=True,
            fwd="stale",
            fwd_status=status,
            ttl=stored_view(found.entry).ttl(self._now(), self.policy),
            detail="stale-if-error",
        )
        return await self.serve_hit(request, found.take(), cache)

    async def _wait_to_validate(self, request: web.Request, coalesce_key: str) -> bool:
        """RFC 9111 §4: the answer of a fill in flight that came in before this request is
        reused like a stored response: only fresh (or stale where allowed). Otherwise wait
        for the fill to end and return True: the request then validates what it stored."""
        fill = self.fills.in_flight.get(coalesce_key)
        head = None if fill is None else fill.head
        if head is None or not head.shared:
            return False
        now = self._now()
        answer = StoredView(head.status, head.headers, Timing(now, now))
        outcome = on_request(answer, request.headers, now, self.policy)
        if isinstance(outcome, Serve) and not outcome.refresh:
            return False
        assert fill is not None
        await fill.wait_end()  # the fill's own deadlines bound this
        return True

    def _ttl_of(self, head: FillHead) -> float:
        now = self._now()
        return StoredView(head.status, head.headers, Timing(now, now)).ttl(now, self.policy)

    async def relay(self, request: web.Request, key: str, cache: CacheStatus) -> Served:
        """Fetch for this client alone and stream the answer, judged by the image guard
        as a fill's is (a refused image is a 422); nothing is stored."""
        guard = self.fills.settings.guard
        headers = forwarded_headers(request, readable_codings_only=self.guarded)
        try:
            response = await self.origin.fetch(request.method, key, headers)
            if guard is not None and request.method == "GET":
                response = replace(response, body=(await guard.judge(response))[0])
        except ProxyError as exc:
            return await send_error(request, exc, cache)
        return await relay_response(request, response, cache)

    async def forward(self, request: web.Request, key: str) -> Served:
        """Methods we do not cache go to the origin with their body; a non-error answer to
        an unsafe method invalidates what is stored for the URL (RFC 9111 §4.4)."""
        cache = CacheStatus(fwd="method")
        headers = forwarded_headers(request)
        body = None
        if request.can_read_body:
            body = request.content.iter_chunked(64 * 1024)
            if request.content_length is not None:
                # The length aiohttp's parser counted off the client's connection: exactly
                # the bytes `body` yields (or it fails and the origin connection is closed).
                headers["Content-Length"] = str(request.content_length)
        try:
            response = await self.origin.fetch(request.method, key, headers, body)
        except ProxyError as exc:
            return await send_error(request, exc, cache)
        if request.method not in SAFE_METHODS and 200 <= response.status < 400:
            # §4.4: the URLs it invalidates, as the key rule keys their requests.
            targets = {
                self.keying.target(p)
                for p in invalidated_targets(key, request.host, response.headers)
            }
            self.fills.invalidate(lambda fill: fill.key in targets)
            for target in targets:
                await self.store.remove(primary_key_hash(target))
        return await relay_response(request, response, cache)


def stored_view(entry: OpenEntry) -> StoredView:
    """An open entry as the caching rules see it."""
    meta = entry.meta
    return StoredView(meta.status, meta.headers, Timing(meta.request_time, meta.response_time))
