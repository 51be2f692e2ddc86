"""Whether a response may be stored, and whether a stored one may answer a request
(RFC 9111 §3, §3.5, §4)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from proxy.policy.directives import Headers, cache_control_of, list_values
from proxy.policy.freshness import HEURISTIC_STATUSES, has_explicit_freshness

# Status codes whose semantics this cache knows (RFC 9110 §15), for must-understand.
UNDERSTOOD_STATUSES = frozenset(
    [*range(200, 207), *range(300, 309), *range(400, 418), 421, 422, 426, *range(500, 506)]
)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


def may_store(
    method: str,
    request_headers: Headers,
    status: int,
    response_headers: Headers,
    *,
    default_ttl: float = 0.0,
) -> Verdict:
    """RFC 9111 §3, for a shared cache; `reason` says why not (for Cache-Status detail).
    `default_ttl`: the lifetime the operator gives where a heuristic is allowed and none
    applies (proxy/policy/freshness.py TtlPolicy)."""
    req_cc = cache_control_of(request_headers)
    res_cc = cache_control_of(response_headers)
    if method != "GET":
        # §3: the request method must be understood and defined as cacheable. We store GET
        # only; HEAD is answered from the GET entry (RFC 9110 §9.3.2).
        return Verdict(False, "method")
    # §3: the status must be final; a 206 is never stored as if it were the whole object,
    # and a 304 only updates a stored response (§4.3.4). Any other code may be stored when
    # the response says for how long (below); only heuristically cacheable ones otherwise.
    if status < 200 or status in (206, 304):
        return Verdict(False, "status")
    # §3: "the no-store cache directive is not present in the request or response".
    if "no-store" in req_cc:
        return Verdict(False, "no-store")
    # §5.2.2.3: with must-understand, store only a status code we understand, and then
    # no-store (sent alongside for caches that do not know must-understand) is overridden.
    if "must-understand" in res_cc:
        if status not in UNDERSTOOD_STATUSES:
            return Verdict(False, "must-understand")
    elif "no-store" in res_cc:
        return Verdict(False, "no-store")
    # §3: a shared cache does not store a response with the private directive.
    if "private" in res_cc:
        return Verdict(False, "private")
    # §3.5: a shared cache stores a response to a request with Authorization only when
    # the response says it may: must-revalidate, public or s-maxage.
    if "authorization" in request_headers and not (
        "must-revalidate" in res_cc or "public" in res_cc or "s-maxage" in res_cc
    ):
        return Verdict(False, "authorization")
    # RFC 9111 §4.1: "Vary: *" always fails to match, so storing it is pointless.
    if "*" in list_values(response_headers, "Vary"):
        return Verdict(False, "vary-star")
    # §3 requires explicit freshness, `public`, a heuristically cacheable status, or the
    # like. We are stricter by design: a response with neither freshness information nor a
    # validator is not stored, because it could never be served or revalidated usefully,
    # unless the operator's default_ttl makes it fresh for a while.
    has_validator = "etag" in response_headers or "last-modified" in response_headers
    if has_explicit_freshness(response_headers) or (
        (has_validator or default_ttl > 0) and (status in HEURISTIC_STATUSES or "public" in res_cc)
    ):
        return Verdict(True)
    return Verdict(False, "no-freshness")


def may_serve_stored(request_headers: Headers, stored_headers: Headers) -> Verdict:
    """Request-side rules that forbid answering from the cache at all (RFC 9111 §4)."""
    if "authorization" in request_headers:
        # §3.5: a stored response is reused for a request with Authorization only if it was
        # stored under one of the directives that allow it.
        cc = cache_control_of(stored_headers)
        if not ("must-revalidate" in cc or "public" in cc or "s-maxage" in cc):
            return Verdict(False, "authorization")
    return Verdict(True)


def request_wants_validation(request_headers: Headers) -> bool:
    """§5.2.1.4 no-cache in the request; §5.4 Pragma: no-cache only without Cache-Control."""
    if "no-cache" in cache_control_of(request_headers):
        return True
    if "cache-control" in request_headers:
        return False
    return any(v.lower() == "no-cache" for v in list_values(request_headers, "Pragma"))


def sharing_key(coalesce_key: str, request_headers: Headers) -> str:
    """Which requests may share one fetch: those of the coalescing key and, for a request
    with Authorization, only those with the same credentials. Its answer may be for that
    user alone (§3.5), and requests of others that had joined it would each have to fetch
    alone: one request with any Authorization could undo the coalescing of a key for
    everyone. Requests of others fetch on their own instead (after the first, which may
    have stored what they need)."""
    credentials = request_headers.getall("Authorization", ())
    if not credentials:
        return coalesce_key
    digest = hashlib.sha256("\n".join(credentials).encode()).hexdigest()
    return f"{coalesce_key} authorization={digest}"
