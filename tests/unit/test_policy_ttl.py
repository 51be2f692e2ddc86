"""The operator's bounds on freshness lifetimes (TtlPolicy: --max-ttl, --max-error-ttl,
--default-ttl) on top of RFC 9111 §4.2.1 and §4.2.2, and what they mean for storing
(§3), reuse (§4.2) and the Cache-Status ttl (RFC 9211 §2.4)."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from proxy.policy.freshness import RFC_ONLY, Timing, TtlPolicy, freshness_lifetime, time_to_live
from proxy.policy.reuse import Action, decide_reuse
from proxy.policy.storable import may_store

T0 = 1_700_000_000
AT_T0 = Timing(T0, T0)
YEAR = 31536000
NO_REQUEST: CIMultiDict[str] = CIMultiDict()


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict([("Date", formatdate(T0, usegmt=True)), *pairs])


LAST_MODIFIED_10_DAYS = ("Last-Modified", formatdate(T0 - 10 * 86400, usegmt=True))

# -- max_ttl and max_error_ttl only ever shorten the RFC 9111 §4.2.1 / §4.2.2 lifetime ---------


@pytest.mark.parametrize(
    ("status", "pairs", "policy", "expected"),
    [
        # No bounds: the lifetime the fields give (§4.2.1).
        (200, [("Cache-Control", "max-age=3600")], RFC_ONLY, 3600.0),
        (504, [("Cache-Control", f"max-age={YEAR}")], RFC_ONLY, float(YEAR)),
        # max_ttl bounds every explicit lifetime: max-age, s-maxage, Expires - Date.
        (200, [("Cache-Control", "max-age=3600")], TtlPolicy(max_ttl=1), 1.0),
        (200, [("Cache-Control", "s-maxage=3600")], TtlPolicy(max_ttl=60), 60.0),
        (
            200,
            [("Expires", formatdate(T0 + 3600, usegmt=True))],
            TtlPolicy(max_ttl=60),
            60.0,
        ),
        # ... and a heuristic one (§4.2.2: 10% of 10 days = 86400 s).
        (200, [LAST_MODIFIED_10_DAYS], TtlPolicy(max_ttl=600), 600.0),
        # A bound never lengthens a lifetime.
        (200, [("Cache-Control", "max-age=30")], TtlPolicy(max_ttl=60), 30.0),
        (200, [("Cache-Control", "max-age=0")], TtlPolicy(max_ttl=60), 0.0),
        # An invalid max-age is stale at once (§4.2.1), bounds or not.
        (200, [("Cache-Control", "max-age=abc")], TtlPolicy(max_ttl=60), 0.0),
        # max_ttl=0: nothing is ever fresh; every reuse is validated first.
        (200, [("Cache-Control", "max-age=3600")], TtlPolicy(max_ttl=0), 0.0),
        # max_error_ttl bounds a status >= 400 only.
        (504, [("Cache-Control", f"max-age={YEAR}")], TtlPolicy(max_error_ttl=60), 60.0),
        (404, [("Cache-Control", "max-age=3600")], TtlPolicy(max_error_ttl=60), 60.0),
        (400, [("Cache-Control", "max-age=3600")], TtlPolicy(max_error_ttl=60), 60.0),
        (399, [("Cache-Control", "max-age=3600")], TtlPolicy(max_error_ttl=60), 3600.0),
        (200, [("Cache-Control", "max-age=3600")], TtlPolicy(max_error_ttl=60), 3600.0),
        (301, [("Cache-Control", "max-age=3600")], TtlPolicy(max_error_ttl=60), 3600.0),
        (410, [LAST_MODIFIED_10_DAYS], TtlPolicy(max_error_ttl=60), 60.0),
        # Both bounds: the shorter one wins.
        (504, [("Cache-Control", "max-age=3600")], TtlPolicy(max_ttl=10, max_error_ttl=60), 10.0),
        (504, [("Cache-Control", "max-age=3600")], TtlPolicy(max_ttl=600, max_error_ttl=6), 6.0),
        (504, [("Cache-Control", "max-age=3600")], TtlPolicy(max_error_ttl=0), 0.0),
    ],
)
def test_ttl_policy_bounds_the_freshness_lifetime(
    status: int, pairs: list[tuple[str, str]], policy: TtlPolicy, expected: float
) -> None:
    assert freshness_lifetime(status, h(*pairs), AT_T0, ttl_policy=policy) == expected


# -- default_ttl: an operator-chosen heuristic lifetime (RFC 9111 §4.2.2) ----------------------


@pytest.mark.parametrize(
    ("status", "pairs", "policy", "expected"),
    [
        # No explicit and no heuristic lifetime: default_ttl, where §4.2.2 allows a heuristic.
        (200, [], TtlPolicy(default_ttl=300), 300.0),
        (200, [("ETag", '"a"')], TtlPolicy(default_ttl=300), 300.0),
        (404, [], TtlPolicy(default_ttl=300), 300.0),  # heuristically cacheable (RFC 9110 §15.1)
        (500, [("Cache-Control", "public")], TtlPolicy(default_ttl=300), 300.0),  # public
        # Off by default.
        (200, [], RFC_ONLY, 0.0),
        # Not where heuristics are not allowed: 500, 302 without `public`.
        (500, [], TtlPolicy(default_ttl=300), 0.0),
        (302, [], TtlPolicy(default_ttl=300), 0.0),
        # Never over explicit freshness (§4.2.2: "MUST NOT use heuristics" then), even a
        # stale-at-once one: an invalid Expires is already expired (§5.3).
        (200, [("Cache-Control", "max-age=10")], TtlPolicy(default_ttl=300), 10.0),
        (200, [("Cache-Control", "max-age=0")], TtlPolicy(default_ttl=300), 0.0),
        (200, [("Expires", "0")], TtlPolicy(default_ttl=300), 0.0),
        # Never over a Last-Modified heuristic: that one is from the response itself.
        (200, [LAST_MODIFIED_10_DAYS], TtlPolicy(default_ttl=300), 86400.0),
        # It is bounded like any lifetime.
        (200, [], TtlPolicy(max_ttl=60, default_ttl=300), 60.0),
        (404, [], TtlPolicy(max_error_ttl=60, default_ttl=300), 60.0),
    ],
)
def test_default_ttl_is_the_lifetime_of_last_resort(
    status: int, pairs: list[tuple[str, str]], policy: TtlPolicy, expected: float
) -> None:
    assert freshness_lifetime(status, h(*pairs), AT_T0, ttl_policy=policy) == expected


# -- RFC 9111 §3: a response that only default_ttl makes fresh is stored -----------------------


@pytest.mark.parametrize(
    ("status", "pairs", "default_ttl", "stored"),
    [
        # Without freshness or validators pixcache does not store (it could never be
        # reused) ... unless default_ttl gives it a lifetime.
        (200, [], 0.0, False),
        (200, [], 300.0, True),
        (404, [], 300.0, True),
        (200, [("Cache-Control", "public")], 300.0, True),
        # Not a status §3 lets a cache store without explicit freshness.
        (500, [], 300.0, False),
        (302, [], 300.0, False),
        # default_ttl does not override what forbids storing.
        (200, [("Cache-Control", "no-store")], 300.0, False),
        (200, [("Cache-Control", "private")], 300.0, False),
    ],
)
def test_rfc9111_3_default_ttl_makes_a_response_storable(
    status: int, pairs: list[tuple[str, str]], default_ttl: float, stored: bool
) -> None:
    verdict = may_store("GET", NO_REQUEST, status, h(*pairs), default_ttl=default_ttl)
    assert verdict.ok is stored


A_YEAR = [("Cache-Control", f"max-age={YEAR}")]
AN_HOUR = [("Cache-Control", "max-age=3600")]


# -- RFC 9111 §4.2 and RFC 9211 §2.4: reuse and ttl follow the bounded lifetime ----------------


@pytest.mark.parametrize(
    ("status", "pairs", "policy", "now", "action", "ttl"),
    [
        # A 504 the origin says is fresh for a year is fresh for max_error_ttl only ...
        (504, A_YEAR, TtlPolicy(max_error_ttl=60), T0 + 10, Action.FRESH, 50.0),
        (504, A_YEAR, TtlPolicy(max_error_ttl=60), T0 + 61, Action.VALIDATE, -1.0),
        # ... and a 200 for max_ttl.
        (200, AN_HOUR, TtlPolicy(max_ttl=1), T0, Action.FRESH, 1.0),
        (200, AN_HOUR, TtlPolicy(max_ttl=1), T0 + 2, Action.VALIDATE, -1.0),
        # The bound is on the lifetime, which the current age (upstream Age too) uses up
        # (§4.2.3): a response that arrives older than the bound is stale at once.
        (200, [*AN_HOUR, ("Age", "100")], TtlPolicy(max_ttl=60), T0, Action.VALIDATE, -40.0),
        # Bounded stale responses may still be served stale where the response allows it
        # (RFC 5861 §3): the bound shortens freshness, it does not forbid stale serving.
        (
            200,
            [("Cache-Control", "max-age=3600, stale-while-revalidate=60")],
            TtlPolicy(max_ttl=1),
            T0 + 30,
            Action.STALE_REFRESH,
            -29.0,
        ),
        # default_ttl makes a response with no lifetime fresh for that long.
        (200, [], TtlPolicy(default_ttl=30), T0 + 10, Action.FRESH, 20.0),
        (200, [], TtlPolicy(default_ttl=30), T0 + 31, Action.VALIDATE, -1.0),
    ],
)
def test_rfc9111_4_2_reuse_follows_the_bounded_lifetime(
    status: int,
    pairs: list[tuple[str, str]],
    policy: TtlPolicy,
    now: float,
    action: Action,
    ttl: float,
) -> None:
    headers = h(*pairs)
    reuse = decide_reuse(status, headers, AT_T0, NO_REQUEST, now, ttl_policy=policy)
    assert (reuse.action, reuse.ttl) == (action, ttl)
    # The Cache-Status ttl of a miss comes from the same computation.
    assert time_to_live(status, headers, AT_T0, now, ttl_policy=policy) == ttl
