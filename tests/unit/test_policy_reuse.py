"""decide_reuse: may a stored response answer this request, and how (RFC 9111 §4.2,
§4.2.4, §5.2.1, §5.2.2; RFC 5861). One table per section; each row cites its rule.

Every stored response here was received at T0 with Date: T0, so its current age is the
Age it carries plus the seconds since T0 (§4.2.3)."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from proxy.policy.freshness import Timing
from proxy.policy.reuse import Action, decide_reuse, only_if_cached

T0 = 1_700_000_000
AT_T0 = Timing(T0, T0)
FRESH, STALE_OK, STALE_REFRESH, VALIDATE = (
    Action.FRESH,
    Action.STALE_OK,
    Action.STALE_REFRESH,
    Action.VALIDATE,
)

Pairs = list[tuple[str, str]]


def stored(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict([("Date", formatdate(T0, usegmt=True)), *pairs])


def cc(value: str) -> Pairs:
    return [("Cache-Control", value)]


def decide(
    response: Pairs, asked: Pairs, after: float, grace: float = 0.0
) -> tuple[Action, float, str, float]:
    headers = stored(*response)
    reuse = decide_reuse(200, headers, AT_T0, CIMultiDict(asked), T0 + after, grace=grace)
    return reuse.action, reuse.ttl, reuse.fwd, reuse.stale_if_error


# -- RFC 9111 §4.2: fresh while freshness_lifetime > current_age ---------------------------------


@pytest.mark.parametrize(
    ("response", "after", "expected"),
    [
        # §4.2: "response_is_fresh = (freshness_lifetime > current_age)".
        (cc("max-age=60"), 10, (FRESH, 50.0, "", 0.0)),
        (cc("max-age=60"), 59, (FRESH, 1.0, "", 0.0)),
        # ... equal is not greater: stale, so validated (§4.3).
        (cc("max-age=60"), 60, (VALIDATE, 0.0, "stale", 0.0)),
        (cc("max-age=60"), 90, (VALIDATE, -30.0, "stale", 0.0)),
        # §4.2.3: the Age an upstream cache sent counts toward the current age.
        ([*cc("max-age=60"), ("Age", "50")], 5, (FRESH, 5.0, "", 0.0)),
        ([*cc("max-age=60"), ("Age", "60")], 0, (VALIDATE, 0.0, "stale", 0.0)),
        # §5.1: an invalid Age is ignored; a list-based one counts by its first member.
        ([*cc("max-age=60"), ("Age", "abc")], 10, (FRESH, 50.0, "", 0.0)),
        ([*cc("max-age=60"), ("Age", "70, 0")], 0, (VALIDATE, -10.0, "stale", 0.0)),
        # §4.2.1: Expires - Date.
        ([("Expires", formatdate(T0 + 60, usegmt=True))], 10, (FRESH, 50.0, "", 0.0)),
        ([("Expires", formatdate(T0 - 60, usegmt=True))], 0, (VALIDATE, 0.0, "stale", 0.0)),
        # §5.3: an invalid Expires is already expired.
        ([("Expires", "0")], 0, (VALIDATE, 0.0, "stale", 0.0)),
        # §4.2.1: max-age overrides Expires.
        (
            [*cc("max-age=60"), ("Expires", formatdate(T0 - 60, usegmt=True))],
            10,
            (FRESH, 50.0, "", 0.0),
        ),
        # §4.2.2: heuristic freshness from Last-Modified (10% of 10 days).
        (
            [("Last-Modified", formatdate(T0 - 864000, usegmt=True))],
            100,
            (FRESH, 86300.0, "", 0.0),
        ),
        # No explicit and no heuristic freshness: stale at once.
        ([("ETag", '"x"')], 0, (VALIDATE, 0.0, "stale", 0.0)),
    ],
)
def test_rfc9111_4_2_fresh_or_stale(
    response: Pairs, after: float, expected: tuple[Action, float, str, float]
) -> None:
    assert decide(response, [], after) == expected


# -- RFC 9111 §4.2.4: serving stale responses ----------------------------------------------------


@pytest.mark.parametrize(
    ("response", "after", "grace", "expected"),
    [
        # "A cache MUST NOT generate a stale response unless it is disconnected or doing so
        # is explicitly permitted by the client or origin server": a stale entry without
        # such permission is validated, never served as it is.
        (cc("max-age=60"), 70, 0.0, (VALIDATE, -10.0, "stale", 0.0)),
        # ... while the origin is unreachable ("disconnected"), the operator's grace may
        # serve it, within that much staleness ...
        (cc("max-age=60"), 70, 30.0, (VALIDATE, -10.0, "stale", 30.0)),
        (cc("max-age=60"), 90, 30.0, (VALIDATE, -30.0, "stale", 30.0)),
        # ... and no more.
        (cc("max-age=60"), 91, 30.0, (VALIDATE, -31.0, "stale", 0.0)),
        # "...must-revalidate ... prohibit(s) the cache from serving a stale response"
        # (§4.2.4, §5.2.2.2), grace or not.
        (cc("max-age=60, must-revalidate"), 70, 30.0, (VALIDATE, -10.0, "stale", 0.0)),
        (cc("max-age=60, proxy-revalidate"), 70, 30.0, (VALIDATE, -10.0, "stale", 0.0)),
        (cc("s-maxage=60"), 70, 30.0, (VALIDATE, -10.0, "stale", 0.0)),
        # A fresh response is served whatever the grace.
        (cc("max-age=60"), 10, 30.0, (FRESH, 50.0, "", 0.0)),
    ],
)
def test_rfc9111_4_2_4_serving_stale(
    response: Pairs, after: float, grace: float, expected: tuple[Action, float, str, float]
) -> None:
    assert decide(response, [], after, grace) == expected


# -- RFC 9111 §5.2.1: request directives ---------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "asked", "after", "expected"),
    [
        # §5.2.1.1 max-age: "the client prefers a response whose age is less than or equal
        # to the specified number of seconds".
        (cc("max-age=600"), cc("max-age=30"), 20, (FRESH, 580.0, "", 0.0)),
        (cc("max-age=600"), cc("max-age=20"), 20, (FRESH, 580.0, "", 0.0)),
        (cc("max-age=600"), cc("max-age=10"), 20, (VALIDATE, 580.0, "request", 0.0)),
        (cc("max-age=600"), cc("max-age=0"), 1, (VALIDATE, 599.0, "request", 0.0)),
        # ... an invalid argument is ignored (§1.2.2 delta-seconds).
        (cc("max-age=600"), cc("max-age=abc"), 20, (FRESH, 580.0, "", 0.0)),
        # §5.2.1.2 max-stale: the client accepts a stale response, any staleness without
        # an argument ...
        (cc("max-age=60"), cc("max-stale"), 1000, (STALE_OK, -940.0, "", 0.0)),
        # ... or within the seconds given.
        (cc("max-age=60"), cc("max-stale=100"), 160, (STALE_OK, -100.0, "", 0.0)),
        (cc("max-age=60"), cc("max-stale=100"), 161, (VALIDATE, -101.0, "stale", 0.0)),
        (cc("max-age=60"), cc("max-stale=abc"), 70, (VALIDATE, -10.0, "stale", 0.0)),
        # ... never where the response forbids it (§5.2.2.2, §5.2.2.8, §5.2.2.10).
        (cc("max-age=60, must-revalidate"), cc("max-stale"), 70, (VALIDATE, -10.0, "stale", 0.0)),
        (cc("max-age=60, proxy-revalidate"), cc("max-stale"), 70, (VALIDATE, -10.0, "stale", 0.0)),
        (cc("s-maxage=60"), cc("max-stale"), 70, (VALIDATE, -10.0, "stale", 0.0)),
        # §5.2.1.3 min-fresh: "the client prefers a response whose freshness lifetime is no
        # less than its current age plus the specified time".
        (cc("max-age=60"), cc("min-fresh=30"), 10, (FRESH, 50.0, "", 0.0)),
        (cc("max-age=60"), cc("min-fresh=50"), 10, (FRESH, 50.0, "", 0.0)),
        (cc("max-age=60"), cc("min-fresh=51"), 10, (VALIDATE, 50.0, "request", 0.0)),
        # §5.2.1.4 no-cache: "a cache MUST NOT use a stored response to satisfy the request
        # without successful validation on the origin server", fresh or not.
        (cc("max-age=600"), cc("no-cache"), 10, (VALIDATE, 590.0, "request", 0.0)),
        # §5.4: Pragma: no-cache means the same when there is no Cache-Control ...
        (cc("max-age=600"), [("Pragma", "no-cache")], 10, (VALIDATE, 590.0, "request", 0.0)),
        # ... and is ignored beside one.
        (
            cc("max-age=600"),
            [("Pragma", "no-cache"), *cc("max-stale")],
            10,
            (FRESH, 590.0, "", 0.0),
        ),
        # §5.2.1.7 only-if-cached: a fresh stored response is served as usual; a stale one
        # needs the origin, which the handler then refuses with a 504 (only_if_cached below).
        (cc("max-age=60"), cc("only-if-cached"), 10, (FRESH, 50.0, "", 0.0)),
        (cc("max-age=60"), cc("only-if-cached"), 70, (VALIDATE, -10.0, "stale", 0.0)),
        (cc("max-age=60"), cc("only-if-cached, max-stale"), 70, (STALE_OK, -10.0, "", 0.0)),
    ],
)
def test_rfc9111_5_2_1_request_directives(
    response: Pairs, asked: Pairs, after: float, expected: tuple[Action, float, str, float]
) -> None:
    assert decide(response, asked, after) == expected


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        # §5.2.1.7: "the client only wishes to obtain a stored response".
        (cc("only-if-cached"), True),
        (cc("max-stale, only-if-cached"), True),
        (cc("ONLY-IF-CACHED"), True),  # §5.2: directive names are case-insensitive
        (cc("no-cache"), False),
        ([], False),
    ],
)
def test_rfc9111_5_2_1_7_only_if_cached(asked: Pairs, expected: bool) -> None:
    assert only_if_cached(CIMultiDict(asked)) is expected


# -- RFC 9111 §5.2.2: response directives --------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "asked", "after", "expected"),
    [
        # §5.2.2.4 no-cache: "the response MUST NOT be used to satisfy any other request
        # without forwarding it for validation and receiving a successful response", even
        # while fresh ...
        (cc("max-age=600, no-cache"), [], 10, (VALIDATE, 590.0, "stale", 0.0)),
        # ... and the qualified form is treated as unqualified (the cache MAY reuse it,
        # but need not).
        (cc('max-age=600, no-cache="Set-Cookie"'), [], 10, (VALIDATE, 590.0, "stale", 0.0)),
        # ... and the stored no-cache also rules out serving it stale.
        (cc("max-age=60, no-cache"), cc("max-stale"), 70, (VALIDATE, -10.0, "stale", 0.0)),
        # §5.2.2.2 must-revalidate: no effect while fresh ...
        (cc("max-age=60, must-revalidate"), [], 10, (FRESH, 50.0, "", 0.0)),
        # ... "once the response has become stale, a cache MUST NOT reuse that response to
        # satisfy another request until it has been successfully validated".
        (cc("max-age=60, must-revalidate"), cc("max-stale"), 70, (VALIDATE, -10.0, "stale", 0.0)),
        (
            cc("max-age=60, must-revalidate, stale-while-revalidate=60"),
            [],
            70,
            (VALIDATE, -10.0, "stale", 0.0),
        ),
        # §5.2.2.8 proxy-revalidate: the same, for shared caches.
        (cc("max-age=60, proxy-revalidate"), [], 10, (FRESH, 50.0, "", 0.0)),
        (
            cc("max-age=60, proxy-revalidate, stale-while-revalidate=60"),
            [],
            70,
            (VALIDATE, -10.0, "stale", 0.0),
        ),
        # §5.2.2.10 s-maxage: overrides max-age and Expires in a shared cache ...
        (cc("max-age=10, s-maxage=60"), [], 30, (FRESH, 30.0, "", 0.0)),
        (cc("max-age=600, s-maxage=60"), [], 70, (VALIDATE, -10.0, "stale", 0.0)),
        (
            [*cc("s-maxage=60"), ("Expires", formatdate(T0 + 600, usegmt=True))],
            [],
            70,
            (VALIDATE, -10.0, "stale", 0.0),
        ),
        # ... and "incorporates the semantics of the proxy-revalidate response directive".
        (
            cc("s-maxage=60, stale-while-revalidate=60"),
            cc("max-stale"),
            70,
            (VALIDATE, -10.0, "stale", 0.0),
        ),
        # §5.2.2.1 max-age (and §1.2.2): an invalid value makes the response stale at once.
        (cc("max-age=abc"), [], 0, (VALIDATE, 0.0, "stale", 0.0)),
        (cc("max-age=-1"), [], 0, (VALIDATE, 0.0, "stale", 0.0)),
    ],
)
def test_rfc9111_5_2_2_response_directives(
    response: Pairs, asked: Pairs, after: float, expected: tuple[Action, float, str, float]
) -> None:
    assert decide(response, asked, after) == expected


# -- RFC 5861: stale-while-revalidate (§3) and stale-if-error (§4) -------------------------------

SWR = cc("max-age=60, stale-while-revalidate=30")
SIE = cc("max-age=60, stale-if-error=30")


@pytest.mark.parametrize(
    ("response", "asked", "after", "grace", "expected"),
    [
        # §3: "caches MAY serve the response in which it appears after it becomes stale, up
        # to the indicated number of seconds", revalidating in the background.
        (SWR, [], 70, 0.0, (STALE_REFRESH, -10.0, "stale", 0.0)),
        (SWR, [], 90, 0.0, (STALE_REFRESH, -30.0, "stale", 0.0)),
        (SWR, [], 91, 0.0, (VALIDATE, -31.0, "stale", 0.0)),
        (SWR, [], 10, 0.0, (FRESH, 50.0, "", 0.0)),
        (
            cc("max-age=60, stale-while-revalidate=abc"),
            [],
            70,
            0.0,
            (VALIDATE, -10.0, "stale", 0.0),
        ),
        # A request that insists on validation gets it (RFC 9111 §5.2.1.4).
        (SWR, cc("no-cache"), 70, 0.0, (VALIDATE, -10.0, "request", 0.0)),
        # §4: stale-if-error in the response: "the stale response may be used to satisfy
        # the request" when an error is encountered, up to that much staleness ...
        (SIE, [], 70, 0.0, (VALIDATE, -10.0, "stale", 30.0)),
        (SIE, [], 90, 0.0, (VALIDATE, -30.0, "stale", 30.0)),
        (SIE, [], 91, 0.0, (VALIDATE, -31.0, "stale", 0.0)),
        # ... or in the request ("the client is willing to accept a stale response") ...
        (cc("max-age=60"), cc("stale-if-error=100"), 120, 0.0, (VALIDATE, -60.0, "stale", 100.0)),
        # ... the longest window of response, request and the operator's grace counts ...
        (SIE, cc("stale-if-error=100"), 70, 50.0, (VALIDATE, -10.0, "stale", 100.0)),
        (SIE, [], 70, 50.0, (VALIDATE, -10.0, "stale", 50.0)),
        # ... and never where the response forbids stale serving (RFC 9111 §5.2.2.2).
        (
            cc("max-age=60, must-revalidate, stale-if-error=30"),
            [],
            70,
            0.0,
            (VALIDATE, -10.0, "stale", 0.0),
        ),
        (
            cc("s-maxage=60, stale-if-error=30"),
            cc("stale-if-error=30"),
            70,
            0.0,
            (VALIDATE, -10.0, "stale", 0.0),
        ),
    ],
)
def test_rfc5861_stale_while_revalidate_and_stale_if_error(
    response: Pairs,
    asked: Pairs,
    after: float,
    grace: float,
    expected: tuple[Action, float, str, float],
) -> None:
    assert decide(response, asked, after, grace) == expected
