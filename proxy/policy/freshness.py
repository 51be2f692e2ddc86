"""Freshness and age of a stored response (RFC 9111 §4.2)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy.directives import (
    Headers,
    cache_control_of,
    list_values,
    parse_delta_seconds,
    single_date,
)

# RFC 9110 §15.1: status codes that are heuristically cacheable.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})

# RFC 9111 §4.2.2: "a typical setting of this fraction might be 10%".
HEURISTIC_FRACTION = 0.10
# An upper bound on a heuristic lifetime, so an ancient Last-Modified does not pin an entry.
HEURISTIC_MAX_SECONDS = 86400.0


@dataclass(frozen=True)
class TtlPolicy:
    """The operator's bounds on freshness lifetimes (--max-ttl, --max-error-ttl,
    --default-ttl), applied to whatever RFC 9111 §4.2.1 and §4.2.2 give.

    Bounds only ever shorten a lifetime: a cache may always treat a response as stale
    earlier than it has to (it then revalidates, §4.2.4). default_ttl is a heuristic
    lifetime of the operator's choosing (§4.2.2 lets a cache assign one), given only where
    a heuristic is allowed and Last-Modified gives none. The bounds are on the lifetime,
    which §4.2 compares with the current age (§4.2.3, upstream Age included): a response
    that arrives older than its bound is stale at once."""

    max_ttl: float | None = None  # longest lifetime of any response; None: unbounded
    max_error_ttl: float | None = None  # longest lifetime of a status >= 400; None: unbounded
    default_ttl: float = 0.0  # lifetime without explicit or heuristic freshness; 0: none

    def bounded(self, status: int, lifetime: float) -> float:
        if self.max_ttl is not None:
            lifetime = min(lifetime, self.max_ttl)
        if status >= 400 and self.max_error_ttl is not None:
            # An error must not be pinned for as long as an origin (or a broken CDN rule)
            # says: it is what clients get until the entry turns stale.
            lifetime = min(lifetime, self.max_error_ttl)
        return lifetime


# The lifetimes exactly as the origin's fields give them.
RFC_ONLY = TtlPolicy()


@dataclass(frozen=True)
class Timing:
    """When the request that fetched a response was sent and its response received."""

    request_time: float
    response_time: float


def explicit_lifetime(
    headers: Headers, response_time: float, *, shared: bool = True
) -> float | None:
    """RFC 9111 §4.2.1: s-maxage (shared caches only), then max-age, then Expires - Date.

    Returns None when the response carries no explicit expiration time. An invalid max-age
    counts as already expired (§4.2.1 allows treating it as stale); so does an invalid
    Expires (§5.3: "0" and other invalid dates represent a time in the past)."""
    cc = cache_control_of(headers)
    if shared and "s-maxage" in cc:
        return float(cc.seconds("s-maxage") or 0)
    if "max-age" in cc:
        return float(cc.seconds("max-age") or 0)
    if "expires" in headers:
        expires = single_date(headers, "Expires", now=response_time)
        if expires is None:
            return 0.0
        # §4.2.1: Expires minus Date, or minus the time received when Date is absent.
        date = single_date(headers, "Date", now=response_time)
        return max(0.0, expires - (response_time if date is None else date))
    return None


def allows_heuristics(status: int, headers: Headers) -> bool:
    """RFC 9111 §4.2.2: a heuristic lifetime only for a heuristically cacheable status
    code (RFC 9110 §15.1) or a response marked `public`."""
    return status in HEURISTIC_STATUSES or "public" in cache_control_of(headers)


def heuristic_lifetime(status: int, headers: Headers, response_time: float) -> float | None:
    """RFC 9111 §4.2.2: only where heuristics are allowed, and here only from
    Last-Modified, as a fraction of the time since it, bounded."""
    if not allows_heuristics(status, headers):
        return None
    last_modified = single_date(headers, "Last-Modified", now=response_time)
    if last_modified is None:
        return None
    date = single_date(headers, "Date", now=response_time)
    if date is None:
        date = response_time
    return min(HEURISTIC_MAX_SECONDS, max(0.0, (date - last_modified) * HEURISTIC_FRACTION))


def freshness_lifetime(
    status: int,
    headers: Headers,
    timing: Timing,
    *,
    shared: bool = True,
    ttl_policy: TtlPolicy = RFC_ONLY,
) -> float:
    """The freshness lifetime in seconds, within the operator's bounds; 0 when the
    response is stale from the start. The one place lifetimes are computed: hits, the
    Cache-Status ttl of a miss, hot hits, eviction and soft purges all come here."""
    lifetime = explicit_lifetime(headers, timing.response_time, shared=shared)
    if lifetime is None:
        lifetime = heuristic_lifetime(status, headers, timing.response_time)
    if lifetime is None:
        lifetime = ttl_policy.default_ttl if allows_heuristics(status, headers) else 0.0
    return ttl_policy.bounded(status, lifetime)


def has_explicit_freshness(headers: Headers, *, shared: bool = True) -> bool:
    cc = cache_control_of(headers)
    return (shared and "s-maxage" in cc) or "max-age" in cc or "expires" in headers


def age_value(headers: Headers) -> int:
    """RFC 9111 §4.2.3 age_value: the Age field (§5.1), or 0 "if not available".

    §5.1: with a list-based value (a list, or several field lines), a cache "SHOULD use
    the first member of the field value, discarding subsequent ones"; if that is invalid
    (a sign, a fraction, a parameter, letters: anything but delta-seconds), it "SHOULD
    ignore the field": the age is then computed as if there were no Age, not guessed."""
    members = list_values(headers, "Age")
    return (parse_delta_seconds(members[0]) or 0) if members else 0


def current_age(headers: Headers, timing: Timing, now: float) -> float:
    """RFC 9111 §4.2.3, computed exactly as the RFC spells it out; never negative."""
    date_value = single_date(headers, "Date", now=timing.response_time)
    if date_value is None:
        date_value = timing.response_time
    apparent_age = max(0.0, timing.response_time - date_value)
    response_delay = max(0.0, timing.response_time - timing.request_time)
    corrected_age_value = age_value(headers) + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = max(0.0, now - timing.response_time)
    return corrected_initial_age + resident_time


def time_to_live(
    status: int,
    headers: Headers,
    timing: Timing,
    now: float,
    *,
    shared: bool = True,
    ttl_policy: TtlPolicy = RFC_ONLY,
) -> float:
    """Seconds of freshness left (§4.2: fresh while lifetime > current_age); may be < 0."""
    lifetime = freshness_lifetime(status, headers, timing, shared=shared, ttl_policy=ttl_policy)
    return lifetime - current_age(headers, timing, now)
