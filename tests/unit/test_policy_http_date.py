"""HTTP-date parsing (RFC 9110 §5.6.7) and what an invalid date means to each field that
carries one (RFC 9111 §4.2, §5.3; RFC 9110 §13.1.3)."""

from __future__ import annotations

import calendar

import pytest
from multidict import CIMultiDict

from proxy.policy.conditional import not_modified
from proxy.policy.directives import parse_http_date
from proxy.policy.freshness import (
    Timing,
    current_age,
    explicit_lifetime,
    freshness_lifetime,
    heuristic_lifetime,
)

# 2026-01-01 00:00:00 UTC: the reference "now" for RFC 850 two-digit years.
NOW = calendar.timegm((2026, 1, 1, 0, 0, 0))


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second)))


# -- RFC 9110 §5.6.7: IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT -------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", ts(1994, 11, 6, 8, 49, 37)),  # the RFC's example
        ("Thu, 18 Aug 2050 02:01:18 GMT", ts(2050, 8, 18, 2, 1, 18)),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Wed, 31 Dec 1969 23:59:59 GMT", -1.0),
        ("Tue, 29 Feb 2000 00:00:00 GMT", ts(2000, 2, 29)),  # a leap day
        ("Mon, 01 Jan 0001 00:00:00 GMT", ts(1, 1, 1)),  # year = 4DIGIT: 0001 ...
        ("Fri, 31 Dec 9999 23:59:59 GMT", ts(9999, 12, 31, 23, 59, 59)),  # ... to 9999
        # time-of-day: "00:00:00 - 23:59:60 (leap second)".
        ("Sat, 31 Dec 2016 23:59:60 GMT", ts(2017, 1, 1)),
        # §5.5: whitespace around a field value is not part of it.
        ("  Sun, 06 Nov 1994 08:49:37 GMT\t", ts(1994, 11, 6, 8, 49, 37)),
        # The grammar does not tie day-name to the date: a wrong weekday is still the date.
        ("Fri, 18 Aug 2050 02:01:18 GMT", ts(2050, 8, 18, 2, 1, 18)),
        ("Sat, 06 Nov 1994 08:49:37 GMT", ts(1994, 11, 6, 8, 49, 37)),
    ],
)
def test_rfc9110_5_6_7_imf_fixdate_is_accepted(text: str, expected: float) -> None:
    assert parse_http_date(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Thu, 18 Aug 50 02:01:18 GMT",  # year = 4DIGIT: no two-digit year
        "Thu, 18 Aug 050 02:01:18 GMT",
        "Thu, 18 Aug 20500 02:01:18 GMT",
        "Thu 18 Aug 2050 02:01:18 GMT",  # day-name "," SP: the comma is required
        "Thu,18 Aug 2050 02:01:18 GMT",  # ... and so is the SP
        "Thu, 18  Aug  2050 02:01:18 GMT",  # exactly one SP between parts
        "Thu,  18 Aug 2050 02:01:18 GMT",
        "Thu, 18 Aug 2050  02:01:18 GMT",
        "Thu, 18 Aug 2050 02:01:18  GMT",
        "Thu,\t18 Aug 2050 02:01:18 GMT",  # SP, not HTAB
        "Thu, 18-Aug-2050 02:01:18 GMT",  # date1 = day SP month SP year: no dashes
        "Thu, 18 Aug 2050 02.01.18 GMT",  # time-of-day = hour ":" minute ":" second
        "Thu, 18 Aug 2050 2:01:18 GMT",  # hour = 2DIGIT
        "Thu, 18 Aug 2050 02:1:18 GMT",  # minute = 2DIGIT
        "Thu, 18 Aug 2050 02:01:8 GMT",  # second = 2DIGIT
        "Thu, 18 Aug 2050 02:01 GMT",
        "Thu, 18 Aug 2050 02:01:18.5 GMT",
        "Mon, 8 Aug 2050 02:01:18 GMT",  # day = 2DIGIT
        "Thu, 18 Aug 2050 02:01:18",  # GMT = %s"GMT": no other zone, nor none
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu, 18 Aug 2050 02:01:18 UT",
        "Thu, 18 Aug 2050 02:01:18 Z",
        "Thu, 18 Aug 2050 02:01:18 +0000",
        "Thu, 18 Aug 2050 02:01:18 -0000",
        "Thu, 18 Aug 2050 02:01:18 EST",
        "Thu, 18 Aug 2050 02:01:18 GMT+1",
        "Thursday, 18 Aug 2050 02:01:18 GMT",  # day-name is the three-letter name
        "Thu, 32 Aug 2050 02:01:18 GMT",  # out of range
        "Tue, 00 Aug 2050 02:01:18 GMT",
        "Wed, 31 Nov 2050 02:01:18 GMT",
        "Thu, 29 Feb 2001 00:00:00 GMT",  # not a leap year
        "Thu, 18 Aug 2050 24:00:00 GMT",
        "Thu, 18 Aug 2050 02:60:00 GMT",
        "Thu, 18 Aug 2050 02:01:61 GMT",
        "Thu, 18 Aug 2050 02:01:60 GMT",  # a leap second is 23:59:60 only
        "Sat, 01 Jan 0000 00:00:00 GMT",
        "Thu, \uff11\uff18 Aug 2050 02:01:18 GMT",  # DIGIT is ASCII only
        "Thu, \u0661\u0668 Aug 2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 02:01:18 GMTx",  # nothing before or after
        "x Thu, 18 Aug 2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 02:01:18 GMT, Thu, 18 Aug 2050 02:01:18 GMT",
    ],
)
def test_rfc9110_5_6_7_imf_fixdate_near_misses_are_invalid(text: str) -> None:
    assert parse_http_date(text) is None


# -- RFC 9110 §5.6.7: rfc850-date = day-name-l "," SP date2 SP time-of-day SP GMT -----------
# date2 = day "-" month "-" 2DIGIT. "Recipients of a timestamp value in rfc850-date format,
# which uses a two-digit year, MUST interpret a timestamp that appears to be more than 50
# years in the future as representing the most recent year in the past that had the same
# last two digits."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sunday, 06-Nov-94 08:49:37 GMT", ts(1994, 11, 6, 8, 49, 37)),  # the RFC's example
        ("Thursday, 18-Aug-50 02:01:18 GMT", ts(2050, 8, 18, 2, 1, 18)),  # 24 years ahead
        ("Friday, 01-Jan-27 00:00:00 GMT", ts(2027, 1, 1)),
        ("Saturday, 01-Jan-00 00:00:00 GMT", ts(2000, 1, 1)),
        ("Tuesday, 29-Feb-00 12:00:00 GMT", ts(2000, 2, 29, 12)),
        ("Wednesday, 31-Dec-25 23:59:59 GMT", ts(2025, 12, 31, 23, 59, 59)),
        # Exactly 50 years ahead is not "more than 50 years in the future" ...
        ("Wednesday, 01-Jan-76 00:00:00 GMT", ts(2076, 1, 1)),
        # ... one second later is, and means the past century.
        ("Thursday, 01-Jan-76 00:00:01 GMT", ts(1976, 1, 1, 0, 0, 1)),
        ("Thursday, 01-Jan-98 00:00:00 GMT", ts(1998, 1, 1)),
        ("  Sunday, 06-Nov-94 08:49:37 GMT ", ts(1994, 11, 6, 8, 49, 37)),
        # A day name that is not the date's weekday does not change the date.
        ("Monday, 06-Nov-94 08:49:37 GMT", ts(1994, 11, 6, 8, 49, 37)),
        ("Wednesday, 01-Jan-76 00:00:01 GMT", ts(1976, 1, 1, 0, 0, 1)),
    ],
)
def test_rfc9110_5_6_7_rfc850_date_is_accepted(text: str, expected: float) -> None:
    assert parse_http_date(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "now", "year"),
    [
        # The century follows `now`: the latest year ending in those digits that is not
        # more than 50 years ahead.
        ("Sunday, 06-Nov-94 08:49:37 GMT", ts(1990, 1, 1), 1994),
        ("Saturday, 06-Nov-94 08:49:37 GMT", ts(2050, 1, 1), 2094),
        ("Monday, 01-Jan-00 00:00:00 GMT", ts(1940, 1, 1), 1900),
        ("Saturday, 01-Jan-00 00:00:00 GMT", ts(1960, 1, 1), 2000),
        ("Wednesday, 01-Jan-10 00:00:00 GMT", ts(2090, 1, 1), 2110),
        ("Sunday, 01-Jan-40 00:00:00 GMT", ts(1990, 1, 1), 2040),  # exactly 50 years ahead
        ("Monday, 01-Jan-40 00:00:00 GMT", ts(1989, 12, 31), 1940),  # a day more
    ],
)
def test_rfc9110_5_6_7_rfc850_two_digit_year_follows_now(text: str, now: float, year: int) -> None:
    parsed = parse_http_date(text, now=now)
    assert parsed is not None
    assert ts(year, 1, 1) <= parsed < ts(year + 1, 1, 1)


def test_rfc9110_5_6_7_rfc850_date_defaults_to_the_clock() -> None:
    # 1994 is more than 50 years in the future from no date this test will run on.
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == ts(1994, 11, 6, 8, 49, 37)


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 06-Nov-94 08:49:37 GMT",  # day-name-l is the full name
        "Sunday, 06-Nov-1994 08:49:37 GMT",  # date2 ends in 2DIGIT
        "Sunday, 06 Nov 94 08:49:37 GMT",  # dashes, not spaces
        "Sunday, 06-Nov 94 08:49:37 GMT",
        "Sunday 06-Nov-94 08:49:37 GMT",  # the comma is required
        "Sunday,  06-Nov-94 08:49:37 GMT",
        "Sunday, 6-Nov-94 08:49:37 GMT",  # day = 2DIGIT
        "Sunday, 06-Nov-94 8:49:37 GMT",
        "Sunday, 06-Nov-94 08.49.37 GMT",
        "Sunday, 06-Nov-94 08:49:37",
        "Sunday, 06-Nov-94 08:49:37 UTC",
        "Sunday, 31-Nov-94 08:49:37 GMT",
        "Thursday, 29-Feb-01 00:00:00 GMT",
        "Sunday, 06-Nov-94 24:49:37 GMT",
    ],
)
def test_rfc9110_5_6_7_rfc850_near_misses_are_invalid(text: str) -> None:
    assert parse_http_date(text, now=NOW) is None


# -- RFC 9110 §5.6.7: asctime-date = day-name SP date3 SP time-of-day SP year ----------------
# date3 = month SP ( 2DIGIT / ( SP DIGIT ) )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sun Nov  6 08:49:37 1994", ts(1994, 11, 6, 8, 49, 37)),  # the RFC's example
        ("Sun Nov 06 08:49:37 1994", ts(1994, 11, 6, 8, 49, 37)),  # 2DIGIT day
        ("Thu Aug 18 02:01:18 2050", ts(2050, 8, 18, 2, 1, 18)),
        ("Tue Feb 29 00:00:00 2000", ts(2000, 2, 29)),
        (" Sun Nov  6 08:49:37 1994 ", ts(1994, 11, 6, 8, 49, 37)),
        # A wrong weekday does not change the date (8 Aug 2050 is a Monday).
        ("Thu Aug  8 02:01:18 2050", ts(2050, 8, 8, 2, 1, 18)),
        ("Mon Nov  6 08:49:37 1994", ts(1994, 11, 6, 8, 49, 37)),
    ],
)
def test_rfc9110_5_6_7_asctime_date_is_accepted(text: str, expected: float) -> None:
    assert parse_http_date(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Sun Nov 6 08:49:37 1994",  # a one-digit day is padded with SP
        "Sun Nov  06 08:49:37 1994",
        "Sun Nov   6 08:49:37 1994",
        "Sun  Nov  6 08:49:37 1994",
        "Sun Nov  6 08:49:37  1994",
        "Sun Nov  6 08:49:37 94",  # year = 4DIGIT
        "Sun Nov  6 08:49:37 1994 GMT",  # no zone in asctime
        "Sun, Nov  6 08:49:37 1994",  # no comma
        "Sunday Nov  6 08:49:37 1994",
        "Sun Nov  6 8:49:37 1994",
        "Sun Nov  6 08:49 1994",
        "Sun Nov 31 08:49:37 1994",
        "Sun Nov  6 08:49:37 0000",
    ],
)
def test_rfc9110_5_6_7_asctime_near_misses_are_invalid(text: str) -> None:
    assert parse_http_date(text) is None


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        " ",
        "0",
        "-1",
        "784111777",
        "garbage",
        "1994-11-06T08:49:37Z",  # ISO 8601
        "Sun, 6 Nov 1994 08:49:37 +0000",  # RFC 5322, not HTTP
        "Sun, 06 Nov 1994 08:49:37 GMT GMT",
    ],
)
def test_rfc9110_5_6_7_other_text_is_not_a_date(text: str | None) -> None:
    assert parse_http_date(text) is None


# -- What an invalid date means where it is used ---------------------------------------------

INVALID_DATES = [
    "Thu, 18 Aug 50 02:01:18 GMT",
    "Thu 18 Aug 2050 02:01:18 GMT",
    "Thu, 18 Aug 2050 02:01:18 UTC",
    "Thu, 18-Aug-2050 02:01:18 GMT",
    "0",
]
T0 = ts(2026, 1, 1)
AT_T0 = Timing(T0, T0)


@pytest.mark.parametrize("expires", INVALID_DATES)
def test_rfc9111_5_3_an_invalid_expires_means_already_expired(expires: str) -> None:
    """§5.3: "A cache recipient MUST interpret invalid date formats, especially the value
    "0", as representing a time in the past (i.e., "already expired")."""
    headers = CIMultiDict([("Expires", expires), ("Date", "Thu, 01 Jan 2026 00:00:00 GMT")])
    assert explicit_lifetime(headers, T0) == 0.0
    # It is still explicit: a Last-Modified heuristic must not make it fresh (§4.2.2).
    headers["Last-Modified"] = "Mon, 01 Jan 2024 00:00:00 GMT"
    assert freshness_lifetime(200, headers, AT_T0) == 0.0


@pytest.mark.parametrize("last_modified", INVALID_DATES)
def test_rfc9111_4_2_2_an_invalid_last_modified_gives_no_heuristic(last_modified: str) -> None:
    headers = CIMultiDict([("Last-Modified", last_modified)])
    assert heuristic_lifetime(200, headers, T0) is None
    assert freshness_lifetime(200, headers, AT_T0) == 0.0


@pytest.mark.parametrize("date", INVALID_DATES)
def test_rfc9111_4_2_3_an_invalid_date_counts_as_the_response_time(date: str) -> None:
    """§4.2.3: date_value from Date; without a valid one, the response time (apparent_age
    is then 0, and only resident time counts)."""
    headers = CIMultiDict([("Date", date), ("Cache-Control", "max-age=60")])
    assert current_age(headers, AT_T0, T0 + 5) == 5.0


@pytest.mark.parametrize("since", INVALID_DATES)
def test_rfc9110_13_1_3_an_invalid_if_modified_since_is_ignored(since: str) -> None:
    """§13.1.3: a recipient MUST ignore If-Modified-Since "if the field value is not a valid
    HTTP-date": the full response is sent, never a 304."""
    request = CIMultiDict([("If-Modified-Since", since)])
    response = CIMultiDict([("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")])
    assert not_modified(request, response) is False


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("Mon, 01 Jan 2024 00:00:00 GMT", True),  # Last-Modified <= since: not modified
        ("Monday, 01-Jan-24 00:00:00 GMT", True),  # every form is accepted
        ("Mon Jan  1 00:00:00 2024", True),
        ("Sun, 31 Dec 2023 23:59:59 GMT", False),  # modified since
    ],
)
def test_rfc9110_13_1_3_a_valid_if_modified_since_in_any_form(since: str, expected: bool) -> None:
    request = CIMultiDict([("If-Modified-Since", since)])
    response = CIMultiDict([("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")])
    assert not_modified(request, response) is expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("Thu, 18 Aug 2050 02:01:18 gmt", "Thu, 18 Aug 2050 02:01:18 GMT"),
        ("THU, 18 Aug 2050 02:01:18 GMT", "Thu, 18 Aug 2050 02:01:18 GMT"),
        ("Thu, 18 aug 2050 02:01:18 GMT", "Thu, 18 Aug 2050 02:01:18 GMT"),
        ("sunday, 06-NOV-94 08:49:37 gmt", "Sunday, 06-Nov-94 08:49:37 GMT"),
        ("sun nov  6 08:49:37 1994", "Sun Nov  6 08:49:37 1994"),
    ],
)
def test_rfc9110_5_6_7_letter_case_is_read_robustly(text: str, canonical: str) -> None:
    """§5.6.7: "Recipients of timestamp values are encouraged to be robust in parsing
    timestamps": only the case of the letters differs, so the date is the same one."""
    now = ts(2026, 1, 1)
    assert parse_http_date(canonical, now=now) is not None
    assert parse_http_date(text, now=now) == parse_http_date(canonical, now=now)
