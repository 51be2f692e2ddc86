"""The admin listener: purge, stats, metrics and health, on its own address, behind the
operator's bearer token (compared in constant time). Every call is logged with its outcome.

Purges work from the shared index and entry files, so they reach what every worker stored,
and they are recorded there, so that a fill in flight in any worker does not commit what it
fetched before the purge."""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import replace

import structlog
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST

from proxy import metrics
from proxy.fills import Fills
from proxy.policy.freshness import RFC_ONLY, Timing, TtlPolicy, freshness_lifetime
from proxy.policy.targeted import effective_headers
from proxy.probes import Readiness
from proxy.source_purge import derivatives_of, source_purge_problem
from storage import CommitRefused, Store, primary_key_hash

log = structlog.get_logger("pixcache.admin")

STORE = web.AppKey("store", Store)
FILLS = web.AppKey("fills", Fills)
TARGETS = web.AppKey("targets", tuple)
TTL_POLICY = web.AppKey("ttl_policy", TtlPolicy)
READINESS = web.AppKey("readiness", Readiness)
KEY_TARGET = web.AppKey("key_target", Callable[[str], str])
SOURCE_GRAMMAR = web.AppKey("source_grammar", str)


def build_admin_app(
    store: Store,
    fills: Fills,
    token: str | None,
    targets: tuple[str, ...],
    ttl_policy: TtlPolicy = RFC_ONLY,
    readiness: Readiness | None = None,
    key_target: Callable[[str], str] = str,
    source_grammar: str = "none",
) -> web.Application:
    app = web.Application(middlewares=[_authorized(token)])
    app[STORE], app[FILLS], app[TARGETS] = store, fills, targets
    app[READINESS] = readiness or Readiness(store)
    app[KEY_TARGET] = key_target  # the handler's key rule (proxy/request_key.py)
    app[TTL_POLICY] = ttl_policy
    app[SOURCE_GRAMMAR] = source_grammar
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/stats", stats)
    app.router.add_post("/purge", purge)
    return app


def _authorized(token: str | None):  # noqa: ANN202 - an aiohttp middleware
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler):  # noqa: ANN001, ANN202
        if expected is not None and not hmac.compare_digest(_authorization(request), expected):
            log.warning("admin_call", path=request.path, outcome="unauthorized")
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="pixcache admin"'},
            )
        response = await handler(request)
        log.info("admin_call", method=request.method, path=request.path_qs, status=response.status)
        return response

    return check


def _authorization(request: web.Request) -> bytes:
    """The Authorization field's octets as received: a value may hold any octets (obs-text,
    RFC 9110 §5.5), which must be refused like any wrong token, not fail to encode. Sent
    more than once, it is no one token (RFC 9110 §5.3), and matches nothing."""
    values = [value for name, value in request.raw_headers if name.lower() == b"authorization"]
    return values[0] if len(values) == 1 else b""


async def healthz(request: web.Request) -> web.Response:
    """The process serves."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The cache directory is writable, the index answers, and no SIGTERM came."""
    return await request.app[READINESS].answer()


async def metrics_page(request: web.Request) -> web.Response:
    return web.Response(body=metrics.scrape(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def stats(request: web.Request) -> web.Response:
    """Figures for the whole instance: entries and bytes from the shared index; with
    several workers, the rest from the samples they share (as /metrics sums them), since
    whichever worker answers only saw its own requests."""
    store, fills = request.app[STORE], request.app[FILLS]
    if metrics.across_workers():
        samples = metrics.instance_samples()
        hits = metrics.sample_total(samples, "pixcache_requests_total", cache="hit")
        total = metrics.sample_total(samples, "pixcache_requests_total")
        in_flight = metrics.sample_total(samples, "pixcache_fills_in_flight")
        evictions = metrics.sample_total(samples, "pixcache_evictions_total")
        corrupt = metrics.sample_total(samples, "pixcache_corrupt_entries_total")
    else:
        hits = metrics.counter_value(metrics.REQUESTS, cache="hit")
        total = metrics.counter_value(metrics.REQUESTS)
        in_flight, evictions, corrupt = len(fills.in_flight), store.evicted, store.corrupt_found
    return web.json_response(
        {
            "entries": await store.entry_count(),
            "bytes": await store.total_size(),
            "hit_ratio": round(hits / total, 4) if total else None,
            "requests": int(total),
            "fills_in_flight": int(in_flight),
            "evictions": int(evictions),
            "corrupt_entries_found": int(corrupt),
        }
    )


async def purge(request: web.Request) -> web.Response:
    """POST /purge?url=/path | ?prefix=/dir/ | ?tag=T | ?source=URL (every derivative of
    one source image), with &soft=1 to mark stale instead."""
    store, fills = request.app[STORE], request.app[FILLS]
    query = request.query
    soft = query.get("soft", "") in ("1", "true", "yes")
    chosen = [name for name in ("url", "prefix", "tag", "source") if name in query]
    if len(chosen) != 1 or not query[chosen[0]]:
        return web.json_response(
            {"error": "give exactly one of url=, prefix=, tag= or source="}, status=400
        )
    kind, value = chosen[0], query[chosen[0]]
    if kind in ("url", "prefix") and not value.startswith("/"):
        return web.json_response({"error": f"{kind} must be a path starting with /"}, status=400)
    if kind == "url":
        value = request.app[KEY_TARGET](value)  # the entry its requests are keyed by
    if kind == "source":
        problem = source_purge_problem(request.app[SOURCE_GRAMMAR], value)
        if problem:
            return web.json_response({"error": problem}, status=400)
    else:
        # Recorded first: a fill in any worker that commits from now on sees it and drops
        # what it fetched (see Store.commit). A source purge records its tag the same way.
        await store.record_purge(kind, value)
    if kind == "source":
        keys = await derivatives_of(store, fills, request.app[SOURCE_GRAMMAR], value)
    elif kind == "url":
        keys = set(await store.keys_at(value)) | {primary_key_hash(value)}
        fills.invalidate(lambda fill: fill.key == value)
    elif kind == "prefix":
        keys = set(await store.keys_under(value))
        fills.invalidate(lambda fill: fill.key.startswith(value))
    else:
        keys = set(await store.keys_tagged(value))
        fills.invalidate(lambda fill: True)  # their tags are not known yet
    if soft:
        app = request.app
        count = await _mark_stale(store, sorted(keys), app[TARGETS], app[TTL_POLICY])
    else:
        count = await store.purge(sorted(keys))
    metrics.PURGES.labels(kind, "soft" if soft else "hard").inc()
    return web.json_response({"purged": count, "kind": kind, "value": value, "soft": soft})


async def _mark_stale(
    store: Store, keys: list[str], targets: tuple[str, ...], ttl_policy: TtlPolicy
) -> int:
    """Soft purge: rewrite each entry as if stored just over its lifetime ago, so the next
    request revalidates, and stale-if-error may still serve it. An entry whose fill is in
    flight (its key's lock is taken) is purged hard: the two must not both rewrite it."""
    marked = 0
    for key in keys:
        lock = store.key_lock(key)
        if not lock.try_acquire():
            marked += await store.remove(key)
            continue
        try:
            marked += await _mark_one_stale(store, key, targets, ttl_policy)
        except (CommitRefused, OSError) as exc:  # removed meanwhile: nothing left to mark
            log.info("soft_purge_skipped", key_hash=key, error=str(exc))
        finally:
            lock.release()
    return marked


async def _mark_one_stale(
    store: Store, key: str, targets: tuple[str, ...], ttl_policy: TtlPolicy
) -> int:
    entry = await store.open(key)
    if entry is None:
        return 0
    try:
        meta = entry.meta
        if meta.is_vary_marker:
            return 0
        headers = effective_headers(CIMultiDict(meta.headers), targets)
        timing = Timing(meta.request_time, meta.response_time)
        lifetime = freshness_lifetime(meta.status, headers, timing, ttl_policy=ttl_policy)
        then = store.clock.now() - lifetime - 1
        await store.refresh(key, replace(meta, request_time=then, response_time=then))
        return 1
    finally:
        os.close(entry.fd)
