"""What the cache does with a request, and with an origin's answer to a fill: the pure
transitions the handler and the fill carry out (RFC 9111 §4, §4.3.3, §5.2.1; RFC 5861).

`on_request`: (stored view, request, now, options) → Serve / Validate / Fetch / Bypass /
NotCached. `on_response`: (stale view, origin answer, request, options) → Store / Freshen /
Unshare; `freshened`: what a Freshen makes of the stored response. None does I/O; `now` is
passed in."""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDict

from proxy.policy.conditional import updated_headers
from proxy.policy.directives import Headers, cache_control_of
from proxy.policy.freshness import RFC_ONLY, Timing, TtlPolicy, time_to_live
from proxy.policy.reuse import Action, decide_reuse, only_if_cached
from proxy.policy.storable import Verdict, may_store
from proxy.policy.targeted import effective_headers


@dataclass(frozen=True)
class PolicyOptions:
    """What the operator set that the rules read; built once from the config."""

    targets: tuple[str, ...] = ()  # RFC 9213 targeted fields, most specific first
    grace: float = 0.0  # seconds of staleness servable while the origin fails
    ttl: TtlPolicy = RFC_ONLY  # bounds on every freshness lifetime


DEFAULT_POLICY = PolicyOptions()


@dataclass(frozen=True)
class StoredView:
    """A stored response as the rules see it."""

    status: int
    headers: Headers
    timing: Timing

    def policy_headers(self, options: PolicyOptions) -> Headers:
        return effective_headers(CIMultiDict(self.headers), options.targets)

    def ttl(self, now: float, options: PolicyOptions) -> float:
        """Seconds of freshness left at `now` (§4.2); negative when stale."""
        headers = self.policy_headers(options)
        return time_to_live(self.status, headers, self.timing, now, ttl_policy=options.ttl)


# -- a request --------------------------------------------------------------------------


@dataclass(frozen=True)
class Serve:
    """Answer from the stored response; `refresh`: revalidate it in the background."""

    ttl: float
    refresh: bool = False


@dataclass(frozen=True)
class Validate:
    """Forward, conditionally where the stored response has validators (§4.3.1); it may
    still answer if the origin fails, up to `stale_if_error` seconds of staleness."""

    fwd: str
    stale_if_error: float = 0.0


@dataclass(frozen=True)
class Fetch:
    """Nothing stored may answer: fetch (coalesced with others of the key)."""

    fwd: str


@dataclass(frozen=True)
class Bypass:
    """Fetch for this client alone; store nothing."""

    fwd: str
    detail: str


@dataclass(frozen=True)
class NotCached:
    """§5.2.1.7 only-if-cached and nothing stored may answer: 504."""

    fwd: str


RequestOutcome = Serve | Validate | Fetch | Bypass | NotCached


def on_request(
    stored: StoredView | None,
    request_headers: Headers,
    now: float,
    options: PolicyOptions,
    *,
    absent: str = "uri-miss",
) -> RequestOutcome:
    """How to answer a GET or HEAD, given the stored response selected for it (None:
    none, and `absent` is the Cache-Status fwd reason: uri-miss or vary-miss)."""
    fwd, stale_if_error = absent, 0.0
    if stored is not None:
        reuse = decide_reuse(
            stored.status,
            stored.policy_headers(options),
            stored.timing,
            request_headers,
            now,
            grace=options.grace,
            ttl_policy=options.ttl,
        )
        if reuse.action in (Action.FRESH, Action.STALE_OK):
            return Serve(reuse.ttl)
        if reuse.action is Action.STALE_REFRESH:
            return Serve(reuse.ttl, refresh=True)  # RFC 5861 §3
        if reuse.action is Action.UNUSABLE:
            # §3.5: a response stored without public, s-maxage or must-revalidate never
            # answers a request with Authorization.
            return Bypass("request", "authorization")
        fwd, stale_if_error = reuse.fwd, reuse.stale_if_error
    if only_if_cached(request_headers):
        # §5.2.1.7: no stored response may be used: 504, never a forward.
        return NotCached(fwd)
    if "no-store" in cache_control_of(request_headers):
        # §5.2.1.5: neither store nor (we choose) coalesce this one.
        return Bypass("request", "no-store")
    if stored is None:
        return Fetch(fwd)
    return Validate(fwd, stale_if_error)


# -- an origin's answer to a fill ------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """Shareable: store it (if admitted) and stream it to every waiter."""

    verdict: Verdict


@dataclass(frozen=True)
class Freshen:
    """§4.3.4: a 304 to our validation; the stored response, updated, answers."""


@dataclass(frozen=True)
class Unshare:
    """Not shareable: it goes to the request that started the fill alone."""

    verdict: Verdict


ResponseOutcome = Store | Freshen | Unshare


def on_response(
    validating: bool,
    status: int,
    response_headers: Headers,
    request_headers: Headers,
    options: PolicyOptions,
) -> ResponseOutcome:
    """What a fill does with the origin's answer; `validating`: it asked conditionally for
    a stored response."""
    if status == 304 and validating:
        return Freshen()
    policy_headers = effective_headers(response_headers, options.targets)
    verdict = may_store(
        "GET", request_headers, status, policy_headers, default_ttl=options.ttl.default_ttl
    )
    if not verdict.ok:
        return Unshare(verdict)
    if validating and status >= 500:
        # §4.3.3: a 5xx to a revalidation may be handled "as if the server failed to
        # respond"; it must not replace the stored response that stale-if-error may serve.
        return Unshare(Verdict(False, "origin-error"))
    return Store(verdict)


def freshened(
    stored_status: int,
    stored_headers: Headers,
    response_headers: Headers,
    request_headers: Headers,
    options: PolicyOptions,
) -> tuple[list[tuple[str, str]], Verdict]:
    """§4.3.4: the stored fields updated with a 304's, and whether the response may still
    be stored and shared: the 304 may have made it private or no-store (§3), and it is
    then neither kept nor shared."""
    headers = updated_headers(stored_headers, response_headers)
    if "age" not in response_headers:
        # §5.1: the old Age described the old response; the 304 is the newer one.
        headers = [(n, v) for n, v in headers if n.lower() != "age"]
    policy_headers = effective_headers(CIMultiDict(headers), options.targets)
    return headers, may_store("GET", request_headers, stored_status, policy_headers)
