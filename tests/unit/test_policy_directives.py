"""Cache-Control parsing, delta-seconds and HTTP dates (RFC 9111 §1.2.2, §4.2.1, §5.2;
RFC 9110 §5.3, §5.6)."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from proxy.policy.directives import (
    DELTA_SECONDS_MAX,
    cache_control_of,
    list_values,
    parse_cache_control,
    parse_delta_seconds,
    parse_http_date,
    single_date,
)

T0 = 1_700_000_000


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


# -- RFC 9111 §5.2: directive syntax ------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # §5.2: directive names are compared case-insensitively.
        (["Max-Age=60"], {"max-age": "60"}),
        (["PUBLIC, No-Store"], {"public": None, "no-store": None}),
        # RFC 9110 §5.6.1: OWS around list commas; empty list members are ignored.
        (["  public ,\tmax-age=60  "], {"public": None, "max-age": "60"}),
        ([",, public ,,"], {"public": None}),
        ([""], {}),
        ([], {}),
        # §5.2: an argument may be a quoted-string; commas inside it do not split.
        (
            ['no-cache="Set-Cookie, X-Trace", max-age=5'],
            {"no-cache": "Set-Cookie, X-Trace", "max-age": "5"},
        ),
        # RFC 9110 §5.6.4: quoted-pair inside a quoted-string.
        (['ext="a\\"b,c", public'], {"ext": 'a"b,c', "public": None}),
        (['ext="back\\\\slash", public'], {"ext": "back\\slash", "public": None}),
        # Unknown directives are kept (and ignored by the rules).
        (["community=UCI, immutable"], {"community": "UCI", "immutable": None}),
        # An empty argument is still an argument, unlike a bare directive.
        (["max-age="], {"max-age": ""}),
    ],
)
def test_rfc9111_5_2_directive_syntax(lines: list[str], expected: dict[str, str | None]) -> None:
    assert parse_cache_control(lines).directives == expected


@pytest.mark.parametrize(
    ("lines", "expected_max_age"),
    [
        (["max-age=10, max-age=20"], "10"),
        (["max-age=10", "max-age=20"], "10"),
        (["MAX-AGE=10, max-age=20"], "10"),
        # The first occurrence wins even when it is the invalid one.
        (["max-age=abc, max-age=20"], "abc"),
    ],
)
def test_rfc9111_4_2_1_duplicated_directive_first_occurrence_wins(
    lines: list[str], expected_max_age: str
) -> None:
    assert parse_cache_control(lines).directives["max-age"] == expected_max_age


def test_rfc9110_5_3_cache_control_field_lines_are_combined() -> None:
    headers = h(("Cache-Control", "public"), ("cache-control", "max-age=5"), ("X", "no-store"))
    cc = cache_control_of(headers)
    assert cc.directives == {"public": None, "max-age": "5"}
    assert "public" in cc
    assert "no-store" not in cc


def test_rfc9111_5_2_absent_cache_control_has_no_directives() -> None:
    assert cache_control_of(h(("Pragma", "no-cache"))).directives == {}


# -- RFC 9111 §1.2.2: delta-seconds ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        ("60", 60),
        ("007", 7),
        ("2147483647", 2147483647),
        # §1.2.2: anything larger than 2^31 is treated as 2^31.
        ("2147483648", 2**31),
        ("2147483649", DELTA_SECONDS_MAX),
        ("9" * 40, DELTA_SECONDS_MAX),
        # delta-seconds = 1*DIGIT: every other form is invalid.
        ('"3600"', None),
        ("-1", None),
        ("+5", None),
        ("abc", None),
        ("1.5", None),
        ("1e3", None),
        ("", None),
        (" 5", None),
        ("5 ", None),
        ("\u0665", None),  # ARABIC-INDIC DIGIT FIVE: isdigit() but not DIGIT
        ("\u00b2", None),  # SUPERSCRIPT TWO
        (None, None),
    ],
)
def test_rfc9111_1_2_2_delta_seconds(raw: str | None, expected: int | None) -> None:
    assert parse_delta_seconds(raw) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("max-age=3600", 3600),
        # §5.2: "recipients ought to accept both forms" (token and quoted-string), even
        # though §5.2.1.1 forbids a sender to generate max-age="3600".
        ('max-age="3600"', 3600),
        ("max-age=-1", None),
        ("max-age=abc", None),
        ('max-age="-1"', None),
        ("max-age=", None),
        ("max-age", None),
        ("max-age=99999999999999999999", 2**31),
        ("public", None),
    ],
)
def test_rfc9111_1_2_2_cache_control_seconds(line: str, expected: int | None) -> None:
    assert parse_cache_control([line]).seconds("max-age") == expected


# -- RFC 9110 §5.6.7: HTTP-date ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850 format
        "  Sun, 06 Nov 1994 08:49:37 GMT  ",
    ],
)
def test_rfc9110_5_6_7_http_date_formats(text: str) -> None:
    assert parse_http_date(text) == 784111777.0


def test_rfc9110_5_6_7_asctime_date_is_accepted() -> None:
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777.0


def test_rfc9110_5_6_7_http_date_round_trips_formatdate() -> None:
    assert parse_http_date(formatdate(T0, usegmt=True)) == T0


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "0",
        "-1",
        "garbage",
        "Sun, 06 Nov 1994 08:49:37",  # no zone: not an HTTP-date
        "Sun, 06 Nov 1994 08:49:37 -0000",  # "unknown zone": not GMT
        "Sun, 06 Nov 99999 08:49:37 GMT",  # year out of range
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
    ],
)
def test_rfc9110_5_6_7_invalid_http_date_is_none(text: str | None) -> None:
    assert parse_http_date(text) is None


def test_rfc9111_5_3_single_date_with_several_lines_is_invalid() -> None:
    date = formatdate(T0, usegmt=True)
    assert single_date(h(("Expires", date)), "Expires") == T0
    assert single_date(h(("Expires", date), ("Expires", date)), "Expires") is None
    assert single_date(h(), "Expires") is None


def test_rfc9110_5_6_1_list_values_splits_lines_and_drops_empty_members() -> None:
    headers = h(("Vary", "Accept,  , Accept-Encoding"), ("vary", ' "a,b" ,'), ("Vary", ""))
    assert list_values(headers, "Vary") == ["Accept", "Accept-Encoding", '"a,b"']
