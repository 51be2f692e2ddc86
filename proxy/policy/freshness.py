"""Freshness and age of a stored response (RFC 9111 §4.2)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy.directives import Headers, cache_control_of, parse_delta_seconds, single_date

# RFC 9110 §15.1: status codes that are heuristically cacheable.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})

# RFC 9111 §4.2.2: "a typical setting of this fraction might be 10%".
HEURISTIC_FRACTION = 0.10
# An upper bound on a heuristic lifetime, so an ancient Last-Modified does not pin an entry.
HEURISTIC_MAX_SECONDS = 86400.0


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
        expires = single_date(headers, "Expires")
        if expires is None:
            return 0.0
        # §4.2.1: Expires minus Date, or minus the time received when Date is absent.
        date = single_date(headers, "Date")
        return max(0.0, expires - (response_time if date is None else date))
    return None


def heuristic_lifetime(status: int, headers: Headers, response_time: float) -> float | None:
    """RFC 9111 §4.2.2: only for heuristically cacheable codes (or `public`), and here only
    from Last-Modified, as a fraction of the time since it, bounded."""
    cc = cache_control_of(headers)
    if status not in HEURISTIC_STATUSES and "public" not in cc:
        return None
    last_modified = single_date(headers, "Last-Modified")
    if last_modified is None:
        return None
    date = single_date(headers, "Date")
    if date is None:
        date = response_time
    return min(HEURISTIC_MAX_SECONDS, max(0.0, (date - last_modified) * HEURISTIC_FRACTION))


def age_is_invalid(headers: Headers) -> bool:
    """RFC 9111 §5.1: Age is one non-negative integer. Several field lines, a list, a sign,
    a fraction or a parameter make it invalid; we then cannot know how old the response
    is, and count it as stale rather than guess (the conservative reading of §5.1)."""
    ages = headers.getall("Age", ())
    if not ages:
        return False
    return len(ages) != 1 or parse_delta_seconds(ages[0].strip()) is None


def freshness_lifetime(
    status: int, headers: Headers, timing: Timing, *, shared: bool = True
) -> float:
    """The freshness lifetime in seconds; 0 when the response is stale from the start."""
    if age_is_invalid(headers):
        return 0.0
    explicit = explicit_lifetime(headers, timing.response_time, shared=shared)
    if explicit is not None:
        return explicit
    return heuristic_lifetime(status, headers, timing.response_time) or 0.0


def has_explicit_freshness(headers: Headers, *, shared: bool = True) -> bool:
    cc = cache_control_of(headers)
    return (shared and "s-maxage" in cc) or "max-age" in cc or "expires" in headers


def current_age(headers: Headers, timing: Timing, now: float) -> float:
    """RFC 9111 §4.2.3, computed exactly as the RFC spells it out; never negative."""
    ages = headers.getall("Age", ())
    age_value = parse_delta_seconds(ages[0].strip()) if len(ages) == 1 else None
    age_value = age_value or 0
    date_value = single_date(headers, "Date")
    if date_value is None:
        date_value = timing.response_time
    apparent_age = max(0.0, timing.response_time - date_value)
    response_delay = max(0.0, timing.response_time - timing.request_time)
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = max(0.0, now - timing.response_time)
    return corrected_initial_age + resident_time


def time_to_live(
    status: int, headers: Headers, timing: Timing, now: float, *, shared: bool = True
) -> float:
    """Seconds of freshness left (§4.2: fresh while lifetime > current_age); may be < 0."""
    return freshness_lifetime(status, headers, timing, shared=shared) - current_age(
        headers, timing, now
    )
