"""Properties of the pure policy that must hold for any header text (RFC 9111 §4.2)."""

from __future__ import annotations

import re
from email.utils import formatdate

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.policy.cache_status import CacheStatus
from proxy.policy.directives import (
    parse_cache_control,
    parse_delta_seconds,
    parse_http_date,
)
from proxy.policy.freshness import (
    HEURISTIC_MAX_SECONDS,
    Timing,
    current_age,
    explicit_lifetime,
    freshness_lifetime,
    heuristic_lifetime,
    time_to_live,
)
from proxy.policy.hop_by_hop import HOP_BY_HOP, end_to_end
from proxy.policy.storable import may_serve_stored, may_store
from proxy.policy.vary import normalized_value, vary_fields, vary_matches, vary_values

# No example database: the suite leaves nothing behind outside tests/unit.
bounded = settings(max_examples=200, deadline=None, database=None)

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E))
any_text = st.one_of(st.text(), printable)
timestamps = st.integers(min_value=-(2**33), max_value=2**34)
http_dates = timestamps.map(lambda ts: formatdate(ts, usegmt=True))
directive_names = st.sampled_from(
    ["max-age", "s-maxage", "public", "private", "no-cache", "no-store", "must-revalidate"]
)
directive_args = st.sampled_from(["", "=0", "=60", '="60"', "=-1", "=abc", "=99999999999999"])
directive_text = st.lists(st.tuples(directive_names, directive_args), max_size=4).map(
    lambda items: ", ".join(name + arg for name, arg in items)
)
field_values = st.one_of(
    any_text, http_dates, directive_text, st.integers(-(2**40), 2**40).map(str)
)
field_names = st.sampled_from(
    [
        "Cache-Control",
        "cache-control",
        "Expires",
        "Date",
        "Age",
        "Last-Modified",
        "ETag",
        "Vary",
        "Pragma",
        "Authorization",
        "Connection",
        "X-Other",
    ]
)
headers_strategy = st.lists(st.tuples(field_names, field_values), max_size=6).map(CIMultiDict)
statuses = st.one_of(
    st.sampled_from([200, 203, 204, 206, 301, 302, 404, 500]), st.integers(100, 599)
)
# Seconds, as floats, around a plausible "now"; a cache must cope with clocks stepping back.
moments = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
timings = st.builds(Timing, request_time=moments, response_time=moments)


@bounded
@given(st.lists(any_text, max_size=4))
def test_rfc9111_5_2_parse_cache_control_never_raises(lines: list[str]) -> None:
    cc = parse_cache_control(lines)
    for name in cc.directives:
        assert name and name == name.strip().lower()
        seconds = cc.seconds(name)
        assert seconds is None or 0 <= seconds <= 2**31


@bounded
@given(any_text)
def test_rfc9111_1_2_2_delta_seconds_is_none_or_bounded(text: str) -> None:
    value = parse_delta_seconds(text)
    assert value is None or 0 <= value <= 2**31


@bounded
@given(
    st.one_of(
        any_text, http_dates, http_dates.map(lambda d: d[:-4]), http_dates.map(lambda d: d + "x")
    )
)
def test_rfc9110_5_6_7_parse_http_date_never_raises(text: str) -> None:
    value = parse_http_date(text)
    assert value is None or isinstance(value, float)


@bounded
@given(timestamps)
def test_rfc9110_5_6_7_parse_http_date_round_trips_imf_fixdate(ts: int) -> None:
    assert parse_http_date(formatdate(ts, usegmt=True)) == ts


@bounded
@given(statuses, headers_strategy, timings, moments, st.booleans())
def test_rfc9111_4_2_freshness_functions_never_raise_and_are_not_negative(
    status: int, headers: CIMultiDict[str], timing: Timing, now: float, shared: bool
) -> None:
    explicit = explicit_lifetime(headers, timing.response_time, shared=shared)
    heuristic = heuristic_lifetime(status, headers, timing.response_time)
    lifetime = freshness_lifetime(status, headers, timing, shared=shared)
    assert explicit is None or explicit >= 0
    assert heuristic is None or 0 <= heuristic <= HEURISTIC_MAX_SECONDS
    assert lifetime >= 0
    # RFC 9111 §5.1: an invalid Age is ignored; it never changes the lifetime (§4.2.1).
    assert lifetime == (explicit if explicit is not None else heuristic or 0.0)


@bounded
@given(headers_strategy, timings, moments)
def test_rfc9111_4_2_3_current_age_is_never_negative(
    headers: CIMultiDict[str], timing: Timing, now: float
) -> None:
    assert current_age(headers, timing, now) >= 0


@bounded
@given(st.integers(0, 2**40), headers_strategy, timings, moments)
def test_rfc9111_4_2_3_current_age_is_at_least_the_age_header(
    age: int, headers: CIMultiDict[str], timing: Timing, now: float
) -> None:
    headers.popall("Age", None)
    headers["Age"] = str(age)
    assert current_age(headers, timing, now) >= min(age, 2**31)


@bounded
@given(statuses, headers_strategy, timings, moments, st.booleans())
def test_rfc9111_4_2_time_to_live_never_exceeds_lifetime(
    status: int, headers: CIMultiDict[str], timing: Timing, now: float, shared: bool
) -> None:
    lifetime = freshness_lifetime(status, headers, timing, shared=shared)
    assert time_to_live(status, headers, timing, now, shared=shared) <= lifetime


@bounded
@given(
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**6),
    st.integers(-(10**6), 10**6),
    st.integers(0, 10**7),
)
def test_rfc9111_4_2_stored_response_is_never_fresher_than_its_lifetime(
    max_age: int, age: int, delay: int, date_skew: int, resident: int
) -> None:
    """For any Age, response delay, Date skew and resident time, ttl <= max-age - Age."""
    response_time = 1_700_000_000
    timing = Timing(request_time=response_time - delay, response_time=response_time)
    headers = CIMultiDict(
        [
            ("Cache-Control", f"max-age={max_age}"),
            ("Age", str(age)),
            ("Date", formatdate(response_time + date_skew, usegmt=True)),
        ]
    )
    ttl = time_to_live(200, headers, timing, response_time + resident)
    assert ttl <= max_age - age - delay - resident


@bounded
@given(statuses, headers_strategy, timings, moments, st.floats(0, 1e6))
def test_rfc9111_4_2_time_to_live_never_grows_with_time(
    status: int, headers: CIMultiDict[str], timing: Timing, now: float, later: float
) -> None:
    before = time_to_live(status, headers, timing, now)
    assert time_to_live(status, headers, timing, now + later) <= before


@bounded
@given(st.sampled_from(["GET", "HEAD", "POST"]), headers_strategy, statuses, headers_strategy)
def test_rfc9111_3_storable_rules_never_raise(
    method: str, request: CIMultiDict[str], status: int, response: CIMultiDict[str]
) -> None:
    verdict = may_store(method, request, status, response)
    assert verdict.ok == (verdict.reason == "")
    may_serve_stored(request, response)


@bounded
@given(headers_strategy, st.lists(st.tuples(st.sampled_from(["Accept", "DPR", "Width"]), any_text)))
def test_rfc9111_4_1_a_request_matches_the_variant_it_selected(
    response: CIMultiDict[str], request_pairs: list[tuple[str, str]]
) -> None:
    request = CIMultiDict(request_pairs)
    fields = vary_fields(response)
    assert vary_matches(fields, vary_values(fields, request), request) is ("*" not in fields)


@bounded
@given(st.lists(printable, min_size=1, max_size=3), st.sampled_from([" ", "  ", "\t", " \t "]))
def test_rfc9111_4_1_extra_whitespace_selects_the_same_variant(lines: list[str], pad: str) -> None:
    plain = CIMultiDict(("Accept", line) for line in lines)
    padded = CIMultiDict(("Accept", pad + line.replace(" ", pad) + pad) for line in lines)
    assert normalized_value(plain, "accept") == normalized_value(padded, "accept")


@bounded
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from(sorted(HOP_BY_HOP) + ["X-Named", "Content-Type"]),
                printable.filter(bool),
            ),
            printable,
        ),
        max_size=8,
    )
)
def test_rfc9110_7_6_1_no_hop_by_hop_field_survives(pairs: list[tuple[str, str]]) -> None:
    headers = CIMultiDict(pairs)
    out = end_to_end(headers)
    named = {
        member.strip().lower()
        for line in headers.getall("Connection", ())
        for member in line.split(",")
    }
    for name in out:
        lower = name.lower()
        assert lower not in HOP_BY_HOP
        assert lower not in named
        assert not lower.startswith("proxy-")


SF_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"')


@bounded
@given(st.text(min_size=1))
def test_rfc9211_2_8_detail_is_always_a_valid_sf_string(detail: str) -> None:
    rendered = CacheStatus(fwd="miss", detail=detail).render()
    prefix = "pixcache; fwd=miss; detail="
    assert rendered.startswith(prefix)
    assert SF_STRING.fullmatch(rendered[len(prefix) :])
