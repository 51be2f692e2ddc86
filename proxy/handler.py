"""The request path, top to bottom: key → lookup → decide → serve a hit, or fill and stream.

Everything it calls is small and named for what it does: storage.Store finds and opens
entries, proxy.policy decides, proxy.fill fetches once per key, proxy.respond writes."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from http import HTTPStatus

import structlog
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import InternalError, Overloaded, ProxyError
from proxy.errors import NotCached as NotCachedError
from proxy.fill import NOT_FORWARDED_ON_FILL, Fill, FillHead, Stale
from proxy.fills import Fills
from proxy.hot import HotHits
from proxy.observe import PENDING_KEY, Served, record_request, request_id
from proxy.origins.base import Origin, OriginResponse
from proxy.policy.cache_status import CacheStatus
from proxy.policy.freshness import Timing, current_age
from proxy.policy.hop_by_hop import REQUEST_FRAMING, end_to_end, with_via
from proxy.policy.invalidation import invalidated_targets
from proxy.policy.reuse import has_validators
from proxy.policy.targeted import SURROGATE_CAPABILITY
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
from proxy.policy.vary import vary_matches, vary_values
from proxy.respond import (
    RESPONSE_KEY,
    VIA,
    ClientGone,
    abort,
    client_headers,
    send_entry,
    send_filling,
    send_stream,
    start,
)
from proxy.x_accel import nginx_may_send, send_by_nginx
from storage.layout import primary_key_hash, variant_key_hash
from storage.lookup import OpenEntry
from storage.store import Store, VaryPlan

log = structlog.get_logger("pixcache.request")

# RFC 9110 §9.2.1: the safe methods. Anything else invalidates (RFC 9111 §4.4).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CACHED_METHODS = frozenset({"GET", "HEAD"})
# Lookups per request: a fill that waited for another process's fill looks up again.
LOOKUPS = 3


@dataclass
class Lookup:
    entry: OpenEntry | None
    coalesce_key: str
    plan: VaryPlan
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
    ) -> None:
        self.store = store
        self.origin = origin
        self.fills = fills
        self.policy = policy  # what the caching rules read of the config
        self.x_accel_redirect = x_accel_redirect  # nginx's internal location of bodies/
        # What a fill, fetched once for every client of the key, never forwards.
        self.not_forwarded_on_fill = NOT_FORWARDED_ON_FILL | unkeyed_fields
        # Hits prepared by an earlier hit of this worker (off when nginx sends the bodies).
        self.hot = hot if not x_accel_redirect else None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if self.hot is not None and (sent := await self.hot.answer(request, self.store.note_use)):
            return sent
        began = time.monotonic()
        served = Served(500, CacheStatus(detail="internal"))
        try:
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
            served = await self.internal_error(request, exc)
        finally:
            record_request(request, served, began)
        # The response was written already (or the connection is gone); aiohttp's own
        # prepare/write_eof on it are then no-ops.
        return request.get(RESPONSE_KEY) or web.Response(status=served.status)

    async def handle(self, request: web.Request) -> Served:
        key = request.rel_url.raw_path_qs  # the origin comes from config, never the request
        if request.method not in CACHED_METHODS:
            return await self.forward(request, key)
        primary = primary_key_hash(key)
        for _ in range(LOOKUPS):
            found = await self.lookup(primary, request)
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
        outcome = on_request(view, request.headers, time.time(), self.policy, absent=found.fwd)
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
            return await self.error(
                request, NotCachedError("only-if-cached"), CacheStatus(fwd=found.fwd)
            )
        if isinstance(outcome, Validate):
            found.stale_if_error = outcome.stale_if_error
        # A request with Authorization fills too (forwarding it): its response is stored
        # and shared only where §3.5 allows (may_store), else it goes to this client
        # alone; only requests with the same credentials join its fill (fills.joining_key).
        return await self.fill_and_serve(request, key, found)

    async def lookup(self, primary: str, request: web.Request) -> Lookup:
        """The stored entry that matches the request, following a Vary marker (§4.1)."""
        entry = await self.store.open(primary)
        if entry is None:
            return Lookup(None, primary, VaryPlan(primary), "uri-miss")
        if not entry.meta.is_vary_marker:
            return Lookup(entry, primary, VaryPlan(primary), "")
        os.close(entry.fd)
        fields, vary_id = entry.meta.vary_fields, entry.meta.vary_id
        plan = VaryPlan(primary, fields, vary_id)
        variant = variant_key_hash(primary, vary_id, vary_values(fields, request.headers))
        selected = await self.store.open(variant)
        if selected is None:
            return Lookup(None, variant, plan, "vary-miss")
        if not vary_matches(fields, selected.meta.vary_values, request.headers):
            os.close(selected.fd)  # a hash collision or a foreign file: never serve it
            return Lookup(None, variant, plan, "vary-miss")
        return Lookup(selected, variant, plan, "")

    async def serve_hit(self, request: web.Request, entry: OpenEntry, cache: CacheStatus) -> Served:
        meta = entry.meta
        try:
            timing = Timing(meta.request_time, meta.response_time)
            stored = CIMultiDict(meta.headers)
            age = int(current_age(stored, timing, time.time()))
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
        await fill.release_leader()

    def _fill_for(self, request: web.Request, key: str, found: Lookup) -> Fill:
        fetch_headers = _forwarded_headers(request, drop=self.not_forwarded_on_fill)
        entry = found.entry
        seen = entry.identity if entry is not None else None
        stale = None
        if entry is not None and has_validators(CIMultiDict(entry.meta.headers)):
            stale = Stale(os.dup(entry.fd), entry.meta)  # RFC 9111 §4.3.1: validate it
        return Fill(
            key, found.coalesce_key, found.plan, request.headers, fetch_headers, seen, stale
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
            return await self.error(request, exc, CacheStatus(fwd=found.fwd))
        try:
            try:
                head = await fill.wait_head()
            except ProxyError as exc:
                if found.stale_if_error:
                    return await self.serve_stale_on_error(request, found, None)
                cache = CacheStatus(fwd=found.fwd, collapsed=not leader)
                return await self.error(request, exc, cache)
            if head is None:  # another process committed the key: look it up again
                return None
            if head.status >= 500 and found.stale_if_error:
                return await self.serve_stale_on_error(request, found, head.status)
            if not head.shared:
                cache = CacheStatus(
                    fwd=found.fwd,
                    fwd_status=head.origin_status or head.status,
                    detail=head.verdict.reason,
                )
                if leader:
                    return await self.relay_response(request, fill.claim_for_leader(), cache)
                return await self.relay(request, key, cache)
            if not leader and not vary_matches(head.vary_fields, head.vary_values, request.headers):
                # The response varies on a field where we differ from the leader (§4.1).
                return await self.relay(request, key, CacheStatus(fwd="vary-miss"))
            cache = CacheStatus(
                fwd=found.fwd,
                fwd_status=head.origin_status or head.status,
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
            if leader:
                await fill.release_leader()

    async def serve_stale_on_error(
        self, request: web.Request, found: Lookup, status: int | None
    ) -> Served:
        """RFC 5861 §4 (or the operator's grace): the origin failed, the stale entry serves."""
        assert found.entry is not None
        cache = CacheStatus(
            hit=True,
            fwd="stale",
            fwd_status=status,
            ttl=stored_view(found.entry).ttl(time.time(), self.policy),
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
        now = time.time()
        answer = StoredView(head.status, head.headers, Timing(now, now))
        outcome = on_request(answer, request.headers, now, self.policy)
        if isinstance(outcome, Serve) and not outcome.refresh:
            return False
        assert fill is not None
        await fill.wait_end()  # the fill's own deadlines bound this
        return True

    def _ttl_of(self, head: FillHead) -> float:
        now = time.time()
        return StoredView(head.status, head.headers, Timing(now, now)).ttl(now, self.policy)

    async def relay(self, request: web.Request, key: str, cache: CacheStatus) -> Served:
        """Fetch for this client alone and stream the answer; nothing is stored."""
        try:
            response = await self.origin.fetch(request.method, key, _forwarded_headers(request))
        except ProxyError as exc:
            return await self.error(request, exc, cache)
        return await self.relay_response(request, response, cache)

    async def relay_response(
        self, request: web.Request, origin_response: OriginResponse, cache: CacheStatus
    ) -> Served:
        cache = CacheStatus(
            fwd=cache.fwd or "bypass",
            fwd_status=cache.fwd_status or origin_response.status,
            detail=cache.detail,
        )
        served = Served(origin_response.status, cache, origin_response.timings)
        try:
            headers = client_headers(origin_response.headers, cache.render())
            response = await start(
                request, origin_response.status, headers, origin_response.content_length
            )
            await send_stream(request, response, origin_response.body)
        except ProxyError as exc:
            served.error = exc
        finally:
            await origin_response.close()
        return served

    async def forward(self, request: web.Request, key: str) -> Served:
        """Methods we do not cache go to the origin with their body; a non-error answer to
        an unsafe method invalidates what is stored for the URL (RFC 9111 §4.4)."""
        cache = CacheStatus(fwd="method")
        headers = _forwarded_headers(request)
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
            return await self.error(request, exc, cache)
        if request.method not in SAFE_METHODS and 200 <= response.status < 400:
            for path_qs in invalidated_targets(key, request.host, response.headers):
                primary = primary_key_hash(path_qs)
                self.fills.invalidate(primary)
                await self.store.remove(primary)
        return await self.relay_response(request, response, cache)

    async def error(self, request: web.Request, exc: ProxyError, cache: CacheStatus) -> Served:
        detail = f"{exc.event}" + (f" stage={exc.stage}" if exc.stage else "")
        cache = CacheStatus(fwd=cache.fwd, collapsed=cache.collapsed, detail=detail)
        headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "text/plain; charset=utf-8"})
        if isinstance(exc, Overloaded):
            headers["Retry-After"] = str(exc.retry_after)
        with_via(headers, "1.1", VIA)
        headers["Cache-Status"] = cache.render()
        rid = headers["X-Request-Id"] = request_id(request)
        body = error_body(exc, rid)
        response = await start(request, exc.status, headers, len(body))
        if request.method != "HEAD":
            await response.write(body)
        await response.write_eof()
        return Served(exc.status, cache, error=exc)

    async def internal_error(self, request: web.Request, exc: Exception) -> Served:
        error = InternalError(f"internal error: {type(exc).__name__}")
        response = request.get(RESPONSE_KEY)
        if response is not None and response.prepared:
            abort(request)  # the headers are out: cut the body so it cannot look complete
            return Served(500, CacheStatus(detail="internal"), error=error)
        try:
            return await self.error(request, error, CacheStatus())
        except (ClientGone, ConnectionError):
            return Served(499, CacheStatus(detail="internal"), error=error)


def stored_view(entry: OpenEntry) -> StoredView:
    """An open entry as the caching rules see it."""
    meta = entry.meta
    return StoredView(meta.status, meta.headers, Timing(meta.request_time, meta.response_time))


def error_body(exc: ProxyError, rid: str) -> bytes:
    """What a client reads of an error: the status, what failed and at which stage, and the
    id of the log line that has the details. Only pixcache's own words: `message` is
    composed from what pixcache knows; library text (`detail`) never reaches a client, as it
    can name internal addresses or carry another request's header values (invariant 7)."""
    phrase = HTTPStatus(exc.status).phrase if exc.status in _STATUSES else "Error"
    lines = [f"{exc.status} {phrase}: {exc.message}"]
    if exc.stage:
        lines.append(f"stage: {exc.stage}")
    lines.append(f"request id: {rid}")
    return ("\n".join(lines) + "\n").encode()


_STATUSES = frozenset(s.value for s in HTTPStatus)


def _forwarded_headers(
    request: web.Request, *, drop: frozenset[str] = frozenset()
) -> CIMultiDict[str]:
    """RFC 9110 §7.6: strip hop-by-hop fields and add Via. Host names the origin, which the
    client library sets from the configured URL. Surrogate-Capability tells the origin
    that Surrogate-Control directives may target us (Edge Architecture 1.0)."""
    headers = end_to_end(request.headers, drop=drop | REQUEST_FRAMING | {"host"})
    with_via(headers, f"{request.version.major}.{request.version.minor}", VIA)
    headers.add("Surrogate-Capability", SURROGATE_CAPABILITY)
    return headers
