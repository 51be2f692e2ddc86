"""May a stored response answer this request, and how (RFC 9111 §4, §4.2.4, §5.2; RFC 5861).

The outcome is one of:
- FRESH: serve it (§4.2).
- STALE_OK: serve it although stale, because the request accepts that (max-stale, §5.2.1.2).
- STALE_REFRESH: serve it stale now and revalidate in the background
  (stale-while-revalidate, RFC 5861 §3).
- VALIDATE: ask the origin first, conditionally when the entry has validators (§4.3.1).
  `stale_if_error` says for how many seconds of staleness the stored response may still be
  served if the origin then fails (RFC 5861 §4, or the operator's grace).
- UNUSABLE: the stored response cannot serve this request at all (§3.5, Authorization).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from proxy.policy.directives import CacheControl, Headers, cache_control_of
from proxy.policy.freshness import RFC_ONLY, Timing, TtlPolicy, current_age, freshness_lifetime
from proxy.policy.storable import may_serve_stored, request_wants_validation


class Action(StrEnum):
    FRESH = "fresh"
    STALE_OK = "stale-ok"
    STALE_REFRESH = "stale-refresh"
    VALIDATE = "validate"
    UNUSABLE = "unusable"


@dataclass(frozen=True)
class Reuse:
    action: Action
    ttl: float  # seconds of freshness left; negative when stale
    age: float
    fwd: str = ""  # RFC 9211 fwd reason when going forward: stale or request
    stale_if_error: float = 0.0  # staleness (s) still servable if the origin fails


def forbids_stale(stored: CacheControl) -> bool:
    """RFC 9111 §5.2.2.2 must-revalidate, §5.2.2.8 proxy-revalidate, and §5.2.2.10: s-maxage
    "incorporates the semantics of proxy-revalidate" for a shared cache; §5.2.2.4 no-cache."""
    return any(d in stored for d in ("must-revalidate", "proxy-revalidate", "s-maxage", "no-cache"))


def decide_reuse(
    status: int,
    stored_headers: Headers,
    timing: Timing,
    request_headers: Headers,
    now: float,
    *,
    grace: float = 0.0,
    ttl_policy: TtlPolicy = RFC_ONLY,
) -> Reuse:
    if not may_serve_stored(request_headers, stored_headers).ok:
        return Reuse(Action.UNUSABLE, 0.0, 0.0, fwd="request")
    stored = cache_control_of(stored_headers)
    req = cache_control_of(request_headers)
    age = current_age(stored_headers, timing, now)
    ttl = freshness_lifetime(status, stored_headers, timing, ttl_policy=ttl_policy) - age
    staleness = max(0.0, -ttl)
    on_error = _stale_if_error(stored, req, grace)

    def validate(fwd: str) -> Reuse:
        return Reuse(Action.VALIDATE, ttl, age, fwd, on_error if staleness <= on_error else 0.0)

    if request_wants_validation(request_headers):
        return validate("request")
    # §5.2.1.1: the client does not want a response older than max-age.
    max_age = req.seconds("max-age")
    if max_age is not None and age > max_age:
        return validate("request")
    # §5.2.1.3: the client wants it to stay fresh for at least min-fresh more seconds.
    min_fresh = req.seconds("min-fresh")
    if min_fresh is not None and ttl < min_fresh:
        return validate("request")
    # §5.2.2.4: no-cache on the stored response: validate every time, even when fresh.
    if "no-cache" in stored:
        return validate("stale")
    if ttl > 0:  # §4.2: fresh while the freshness lifetime exceeds the current age
        return Reuse(Action.FRESH, ttl, age)
    if not forbids_stale(stored):
        # §5.2.1.2: max-stale without a value accepts any staleness.
        if "max-stale" in req:
            limit = req.seconds("max-stale")
            if req.directives["max-stale"] is None or (limit is not None and staleness <= limit):
                return Reuse(Action.STALE_OK, ttl, age)
        # RFC 5861 §3: serve stale while revalidating, within the window it gives.
        window = stored.seconds("stale-while-revalidate")
        if window is not None and staleness <= window:
            return Reuse(Action.STALE_REFRESH, ttl, age, fwd="stale")
    return validate("stale")


def _stale_if_error(stored: CacheControl, req: CacheControl, grace: float) -> float:
    """RFC 5861 §4: stale-if-error in the response or the request; the operator's grace
    applies too. Never where the response forbids serving stale."""
    if forbids_stale(stored):
        return 0.0
    windows = [grace]
    for cc in (stored, req):
        seconds = cc.seconds("stale-if-error")
        if seconds is not None:
            windows.append(float(seconds))
    return max(windows)


def has_validators(stored_headers: Headers) -> bool:
    return "etag" in stored_headers or "last-modified" in stored_headers


def only_if_cached(request_headers: Headers) -> bool:
    """§5.2.1.7: the client wants a stored response or a 504, never a forward."""
    return "only-if-cached" in cache_control_of(request_headers)
