"""What each request leaves behind: one `request` log event and its metrics."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass

import structlog
from aiohttp import web

from proxy import metrics
from proxy.errors import ProxyError
from proxy.logs import request_event, request_lines, request_logged
from proxy.policy.cache_status import CacheStatus
from proxy.redact import redact

fill_log = structlog.get_logger("pixcache.fill")


@dataclass
class Served:
    """What happened, for the request log event and the metrics."""

    status: int
    cache: CacheStatus
    timings: dict[str, float] | None = None
    error: ProxyError | None = None
    body_bytes: int = 0  # body bytes sent, where known
    client_gone: bool = False  # the client disconnected before we were done
    by_nginx: bool = False  # the body is nginx's to send (X-Accel-Redirect)


HIT = CacheStatus(hit=True)

# What a request that is being answered will have served, should its handler be cancelled.
PENDING_KEY = web.RequestKey("pixcache.pending", Served)
REQUEST_ID_KEY = web.RequestKey("pixcache.request_id", str)
# Unique per process and cheap: the worker's pid, then a counter.
_request_ids = itertools.count(1)
_ID_PREFIX = f"{os.getpid():x}-"


def request_id(request: web.Request) -> str:
    """The id that ties an error body a client saw to this request's log line."""
    rid = request.get(REQUEST_ID_KEY)
    if rid is None:
        rid = request[REQUEST_ID_KEY] = new_request_id()
    return rid


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_request_ids):x}"


def _reset_ids() -> None:
    global _ID_PREFIX, _request_ids
    _ID_PREFIX, _request_ids = f"{os.getpid():x}-", itertools.count(1)


os.register_at_fork(after_in_child=_reset_ids)  # each worker numbers its own requests


def record_request(request: web.Request, served: Served, began: float) -> None:
    seconds = time.monotonic() - began
    _count(served)
    cache = served.cache
    metrics.TALLY.add(cache.outcome, served.status, cache.hit, served.body_bytes, seconds)
    if not request_logged():
        return
    fields: dict[str, object] = {
        "method": request.method,
        "path": request.rel_url.raw_path_qs,
        "status": served.status,
        "cache": served.cache.outcome,
        "bytes": served.body_bytes,
        "duration": round(seconds, 6),
        "request_id": request_id(request),
    }
    if served.client_gone:
        fields["client_gone"] = True
    if served.by_nginx:
        fields["x_accel_redirect"] = True
    if served.cache.collapsed:
        fields["collapsed"] = True
    if served.timings:
        fields["origin_timings"] = served.timings
    if served.error is not None:
        fields["error"] = served.error.event
        fields["error_detail"] = served.error.message
        if served.error.detail:
            fields["error_cause"] = redact(served.error.detail)
        if served.error.stage:
            fields["stage"] = served.error.stage
        fields["origin"] = served.error.origin
    request_event(fields)


def hit_log_head(path: str, body_bytes: int) -> str | None:
    """The fixed start of the `request` line of a 200 hit for `path` sent whole, when
    request lines are JSON (see record_hit); None otherwise."""
    lines = request_lines()
    if lines is None or "request_id" in structlog.contextvars.get_contextvars():
        # The context of this request (its ids, while tracing) belongs in no other's line.
        return None
    fields = {"method": "GET", "path": path, "status": 200, "cache": "hit", "bytes": body_bytes}
    return lines.head(fields)


def record_hit(request: web.Request, body_bytes: int, began: float, log_head: str | None) -> None:
    """record_request for a 200 hit sent whole, with the line's start made in advance."""
    lines = request_lines()
    if log_head is None or lines is None:
        record_request(request, Served(200, HIT, body_bytes=body_bytes), began)
        return
    seconds = time.monotonic() - began
    metrics.TALLY.add("hit", 200, True, body_bytes, seconds)
    lines.write_end(log_head, round(seconds, 6), new_request_id())


def _count(served: Served) -> None:
    """The metrics of a fill (moved once per fill, not on every request); the request
    counters and the duration go through metrics.TALLY."""
    cache = served.cache
    if cache.collapsed:
        metrics.COALESCED.inc()
    elif served.timings:  # one fill, observed once, by the request that led it
        for stage, seconds in served.timings.items():
            metrics.ORIGIN_SECONDS.labels(stage).observe(seconds)
    if served.error is not None and not cache.collapsed:
        metrics.ORIGIN_ERRORS.labels(served.error.stage or "-", served.error.event).inc()


def log_fill_error(key: str, exc: ProxyError) -> None:
    """A fill's failure, once, with the stage and the library's words (redacted)."""
    where = {
        name: value
        for name in ("bucket", "object_key", "reason")
        if (value := getattr(exc, name, None)) is not None
    }  # S3 errors say which bucket and key, and why
    fill_log.warning(
        exc.event,
        key=key,
        origin=exc.origin,
        stage=exc.stage,
        error=exc.message,
        cause=redact(exc.detail) or None,
        **where,
    )
