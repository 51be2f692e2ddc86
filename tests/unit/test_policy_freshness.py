"""Freshness lifetime and age of a stored response (RFC 9111 §4.2)."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from proxy.policy.freshness import (
    Timing,
    age_value,
    current_age,
    explicit_lifetime,
    freshness_lifetime,
    has_explicit_freshness,
    heuristic_lifetime,
    time_to_live,
)

T0 = 1_700_000_000  # a whole second: HTTP-dates have one-second resolution
DAY = 86400


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


AT_T0 = Timing(request_time=T0, response_time=T0)


# -- RFC 9111 §4.2.1: explicit expiration ---------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "shared", "expected"),
    [
        # s-maxage overrides max-age and Expires in a shared cache...
        (
            [("Cache-Control", "max-age=60, s-maxage=600"), ("Expires", date(T0 + 9))],
            True,
            600.0,
        ),
        # ...and is ignored by a private one.
        ([("Cache-Control", "max-age=60, s-maxage=600")], False, 60.0),
        # max-age overrides Expires.
        (
            [("Cache-Control", "max-age=60"), ("Date", date(T0)), ("Expires", date(T0 + 9))],
            True,
            60.0,
        ),
        # Expires minus Date.
        ([("Date", date(T0 - 100)), ("Expires", date(T0 + 200))], True, 300.0),
        # A huge max-age is capped at 2^31 (§1.2.2).
        ([("Cache-Control", "max-age=99999999999999")], True, float(2**31)),
        # Quoted forms are accepted by recipients (§5.2).
        ([("Cache-Control", 's-maxage="30"')], True, 30.0),
        # An invalid max-age / s-maxage makes the response stale; it does not fall through
        # to a later, valid source.
        ([("Cache-Control", "max-age=abc"), ("Expires", date(T0 + 900))], True, 0.0),
        ([("Cache-Control", "max-age=-1")], True, 0.0),
        ([("Cache-Control", "s-maxage=abc, max-age=60")], True, 0.0),
        ([("Cache-Control", "s-maxage=abc, max-age=60")], False, 60.0),
        # Expires earlier than Date: stale, never a negative lifetime.
        ([("Date", date(T0)), ("Expires", date(T0 - 500))], True, 0.0),
        # No explicit expiration at all.
        ([("Cache-Control", "public"), ("Last-Modified", date(T0 - DAY))], True, None),
        ([], True, None),
    ],
)
def test_rfc9111_4_2_1_explicit_lifetime(
    pairs: list[tuple[str, str]], shared: bool, expected: float | None
) -> None:
    assert explicit_lifetime(h(*pairs), T0, shared=shared) == expected


def test_rfc9111_4_2_1_s_maxage_wins_for_shared_cache() -> None:
    headers = h(("Cache-Control", "s-maxage=5, max-age=500"))
    assert freshness_lifetime(200, headers, AT_T0) == 5.0
    assert freshness_lifetime(200, headers, AT_T0, shared=False) == 500.0


def test_rfc9111_4_2_1_expires_without_date_uses_response_time() -> None:
    headers = h(("Expires", date(T0 + 1000)))
    assert explicit_lifetime(headers, T0 + 400) == 600.0
    # An invalid Date is treated as absent.
    headers = h(("Expires", date(T0 + 1000)), ("Date", "yesterday"))
    assert explicit_lifetime(headers, T0 + 400) == 600.0


@pytest.mark.parametrize("expires", ["0", "-1", "never", "", "Sun, 06 Nov 1994 08:49:37"])
def test_rfc9111_5_3_invalid_expires_means_already_expired(expires: str) -> None:
    headers = h(("Date", date(T0)), ("Expires", expires))
    assert explicit_lifetime(headers, T0) == 0.0
    # ... and it is still explicit: no heuristic lifetime replaces it.
    with_lm = h(("Date", date(T0)), ("Expires", expires), ("Last-Modified", date(T0 - 10 * DAY)))
    assert freshness_lifetime(200, with_lm, AT_T0) == 0.0


def test_rfc9111_4_2_1_several_expires_lines_are_invalid() -> None:
    headers = h(("Date", date(T0)), ("Expires", date(T0 + 60)), ("Expires", date(T0 + 60)))
    assert explicit_lifetime(headers, T0) == 0.0


# -- RFC 9111 §4.2.2: heuristic freshness ---------------------------------------------------


@pytest.mark.parametrize(
    ("status", "pairs", "expected"),
    [
        # 10% of the time since Last-Modified.
        (200, [("Date", date(T0)), ("Last-Modified", date(T0 - 5000))], 500.0),
        (404, [("Date", date(T0)), ("Last-Modified", date(T0 - 5000))], 500.0),
        (301, [("Date", date(T0)), ("Last-Modified", date(T0 - 5000))], 500.0),
        # Bounded to one day, however old Last-Modified is.
        (200, [("Date", date(T0)), ("Last-Modified", date(T0 - 100 * DAY))], float(DAY)),
        # Not for a status that is not heuristically cacheable (RFC 9110 §15.1)...
        (302, [("Date", date(T0)), ("Last-Modified", date(T0 - 5000))], None),
        (500, [("Date", date(T0)), ("Last-Modified", date(T0 - 5000))], None),
        # ...unless the response is marked public (§4.2.2).
        (
            302,
            [("Cache-Control", "public"), ("Date", date(T0)), ("Last-Modified", date(T0 - 5000))],
            500.0,
        ),
        # Only from Last-Modified: an ETag alone gives no heuristic lifetime.
        (200, [("Date", date(T0)), ("ETag", '"v1"')], None),
        (200, [("Date", date(T0)), ("Last-Modified", "garbage")], None),
        (
            200,
            [
                ("Date", date(T0)),
                ("Last-Modified", date(T0 - 5000)),
                ("Last-Modified", date(T0 - 5000)),
            ],
            None,
        ),
        # Last-Modified after Date (a skewed origin): no freshness, never negative.
        (200, [("Date", date(T0)), ("Last-Modified", date(T0 + 5000))], 0.0),
    ],
)
def test_rfc9111_4_2_2_heuristic_lifetime(
    status: int, pairs: list[tuple[str, str]], expected: float | None
) -> None:
    assert heuristic_lifetime(status, h(*pairs), T0) == expected


def test_rfc9111_4_2_2_heuristic_without_date_uses_response_time() -> None:
    headers = h(("Last-Modified", date(T0 - 5000)))
    assert heuristic_lifetime(200, headers, T0 + 1000) == 600.0


def test_rfc9111_4_2_2_heuristic_uses_a_date_of_the_epoch() -> None:
    headers = h(("Date", date(0)), ("Last-Modified", date(-5000)))
    assert heuristic_lifetime(200, headers, T0) == 500.0


@pytest.mark.parametrize(
    ("status", "pairs", "expected"),
    [
        # Explicit expiration always wins over the heuristic (§4.2.2: "only if no explicit
        # expiration time is present").
        (200, [("Cache-Control", "max-age=5"), ("Last-Modified", date(T0 - 100 * DAY))], 5.0),
        (200, [("Last-Modified", date(T0 - 5000)), ("Date", date(T0))], 500.0),
        # Nothing at all: stale from the start.
        (200, [], 0.0),
        (302, [("Last-Modified", date(T0 - 5000))], 0.0),
    ],
)
def test_rfc9111_4_2_freshness_lifetime_order(
    status: int, pairs: list[tuple[str, str]], expected: float
) -> None:
    assert freshness_lifetime(status, h(*pairs), AT_T0) == expected


@pytest.mark.parametrize(
    ("pairs", "shared", "expected"),
    [
        ([("Cache-Control", "s-maxage=1")], True, True),
        ([("Cache-Control", "s-maxage=1")], False, False),
        ([("Cache-Control", "max-age=0")], True, True),
        ([("Expires", "0")], True, True),
        ([("Cache-Control", "public"), ("Last-Modified", date(T0))], True, False),
        ([], True, False),
    ],
)
def test_rfc9111_4_2_1_has_explicit_freshness(
    pairs: list[tuple[str, str]], shared: bool, expected: bool
) -> None:
    assert has_explicit_freshness(h(*pairs), shared=shared) is expected


# -- RFC 9111 §4.2.3: calculating age -------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "request_time", "response_time", "now", "expected"),
    [
        # resident_time only.
        ([("Date", date(T0))], T0, T0, T0 + 10, 10.0),
        # age_value from the Age header, plus resident time.
        ([("Date", date(T0)), ("Age", "100")], T0, T0, T0 + 10, 110.0),
        # apparent_age = response_time - date_value.
        ([("Date", date(T0 - 30))], T0, T0, T0, 30.0),
        # corrected_age_value = age_value + response_delay.
        ([("Date", date(T0)), ("Age", "10")], T0 - 5, T0, T0, 15.0),
        # corrected_initial_age = max(apparent_age, corrected_age_value).
        ([("Date", date(T0 - 30)), ("Age", "10")], T0 - 5, T0, T0, 30.0),
        ([("Date", date(T0 - 30)), ("Age", "100")], T0 - 5, T0, T0 + 1, 106.0),
        # Date in the future (clock skew): apparent age is 0, not negative.
        ([("Date", date(T0 + 3600))], T0, T0, T0, 0.0),
        # No Date: date_value is the response time.
        ([], T0 - 2, T0, T0 + 3, 5.0),
        # now before response_time (clock stepped back): resident time is 0.
        ([("Date", date(T0))], T0, T0, T0 - 100, 0.0),
        # response before request (clock stepped back): response delay is 0.
        ([("Date", date(T0))], T0 + 50, T0, T0, 0.0),
        # An invalid Age is ignored (§5.1).
        ([("Date", date(T0)), ("Age", "abc")], T0, T0, T0, 0.0),
        ([("Date", date(T0)), ("Age", "-50")], T0, T0, T0, 0.0),
        ([("Date", date(T0)), ("Age", "1.5")], T0, T0, T0, 0.0),
        # A repeated Age: §5.1 uses the first member and discards the others.
        ([("Date", date(T0)), ("Age", "5"), ("Age", "7")], T0, T0, T0, 5.0),
        # Surrounding whitespace in a single Age line is tolerated.
        ([("Date", date(T0)), ("Age", " 42 ")], T0, T0, T0, 42.0),
        # A huge Age is capped at 2^31 (§1.2.2).
        ([("Date", date(T0)), ("Age", "9" * 30)], T0, T0, T0, float(2**31)),
    ],
)
def test_rfc9111_4_2_3_current_age(
    pairs: list[tuple[str, str]],
    request_time: float,
    response_time: float,
    now: float,
    expected: float,
) -> None:
    timing = Timing(request_time=request_time, response_time=response_time)
    assert current_age(h(*pairs), timing, now) == expected


# -- RFC 9111 §4.2: fresh while freshness_lifetime > current_age ----------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [(T0, 60.0), (T0 + 59, 1.0), (T0 + 60, 0.0), (T0 + 90, -30.0)],
)
def test_rfc9111_4_2_time_to_live_counts_down_and_goes_negative(
    now: float, expected: float
) -> None:
    headers = h(("Cache-Control", "max-age=60"), ("Date", date(T0)))
    assert time_to_live(200, headers, AT_T0, now) == expected


def test_rfc9111_4_2_time_to_live_subtracts_age_from_upstream() -> None:
    headers = h(("Cache-Control", "max-age=60"), ("Date", date(T0)), ("Age", "50"))
    assert time_to_live(200, headers, AT_T0, T0 + 5) == 5.0


def test_rfc9111_4_2_time_to_live_private_cache_ignores_s_maxage() -> None:
    headers = h(("Cache-Control", "s-maxage=10, max-age=100"), ("Date", date(T0)))
    assert time_to_live(200, headers, AT_T0, T0) == 10.0
    assert time_to_live(200, headers, AT_T0, T0, shared=False) == 100.0


# -- RFC 9111 §5.1: Age ----------------------------------------------------------------------
# "a cache encountering a message with a list-based Age field value SHOULD use the first
# member of the field value, discarding subsequent ones. If the field value (after
# discarding additional members, as per above) is invalid (e.g., it contains something
# other than a non-negative integer), a cache SHOULD ignore the field."
# An invalid Age is ignored: the response keeps its lifetime and its age is computed as if
# there were no Age (it is not made stale).


@pytest.mark.parametrize(
    ("ages", "age"),
    [
        # §5.1: invalid: ignored, as if absent.
        (["abc"], 0),  # non-numeric
        (["-7200"], 0),  # negative
        (["7200.0"], 0),  # fractional
        (["1.5"], 0),
        (["7200;foo=bar"], 0),  # a parameter
        (["+5"], 0),  # a sign
        (["0x10"], 0),  # a prefix
        (["1e3"], 0),
        (['"60"'], 0),  # quoted
        ([""], 0),  # empty
        (["abc, 7200"], 0),  # the first member is invalid: the field is ignored
        # §5.1: a list-based value: the first member counts.
        (["0, 0"], 0),
        (["0", "0"], 0),
        (["3600, 3600"], 3600),
        (["7200,0"], 7200),
        (["0,7200"], 0),
        (["7200", "0"], 7200),
        (["0", "7200"], 0),
        (["1, 2"], 1),
        # §5.6.1 of RFC 9110: empty list members are ignored, not taken as the first.
        ([", 30"], 30),
        # §1.2.2: valid, and capped at 2^31.
        (["10"], 10),
        ([" 42 "], 42),
        (["9" * 30], 2**31),
    ],
)
def test_rfc9111_5_1_age_uses_the_first_member_and_ignores_an_invalid_one(
    ages: list[str], age: int
) -> None:
    headers = CIMultiDict([("Cache-Control", "max-age=3600"), *[("Age", a) for a in ages]])
    timing = Timing(1000.0, 1000.0)
    assert age_value(headers) == age
    assert current_age(headers, timing, 1000.0) == float(age)
    assert freshness_lifetime(200, headers, timing) == 3600.0
    assert time_to_live(200, headers, timing, 1000.0) == 3600.0 - age


def test_rfc9111_5_1_valid_age_keeps_the_lifetime() -> None:
    headers = CIMultiDict([("Cache-Control", "max-age=3600"), ("Age", "10")])
    assert freshness_lifetime(200, headers, Timing(1000.0, 1000.0)) == 3600.0
