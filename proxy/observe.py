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
from proxy.policy.cache_status import CacheStatus
from proxy.redact import redact

log = structlog.get_logger("pixcache.request")


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
        rid = request[REQUEST_ID_KEY] = f"{_ID_PREFIX}{next(_request_ids):x}"
    return rid


def _reset_ids() -> None:
    global _ID_PREFIX, _request_ids
    _ID_PREFIX, _request_ids = f"{os.getpid():x}-", itertools.count(1)


os.register_at_fork(after_in_child=_reset_ids)  # each worker numbers its own requests


def record_request(request: web.Request, served: Served, began: float) -> None:
    fields: dict[str, object] = {
        "method": request.method,
        "path": request.rel_url.raw_path_qs,
        "status": served.status,
        "cache": served.cache.outcome,
        "bytes": served.body_bytes,
        "duration": round(time.monotonic() - began, 6),
        "request_id": request_id(request),
    }
    if served.client_gone:
        fields["client_gone"] = True
    if served.by_nginx:
        fields["x_accel_redirect"] = True
    if served.cache.collapsed:
        fields["collapsed"] = True
        metrics.COALESCED.inc()
    if served.timings:
        fields["origin_timings"] = served.timings
        if not served.cache.collapsed:  # one fill, observed once, by the request that led it
            for stage, seconds in served.timings.items():
                metrics.ORIGIN_SECONDS.labels(stage).observe(seconds)
    if served.error is not None:
        fields["error"] = served.error.event
        fields["error_detail"] = served.error.message
        if served.error.detail:
            fields["error_cause"] = redact(served.error.detail)
        stage = served.error.stage
        if stage:
            fields["stage"] = stage
        fields["origin"] = served.error.origin
        if not served.cache.collapsed:
            metrics.ORIGIN_ERRORS.labels(stage or "-", served.error.event).inc()
    source = "cache" if served.cache.hit else "origin"
    metrics.BYTES_SERVED.labels(source).inc(served.body_bytes)
    metrics.REQUESTS.labels(served.cache.outcome, str(served.status)).inc()
    log.info("request", **fields)
