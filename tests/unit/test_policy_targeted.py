"""Targeted cache-control fields (RFC 9213): parsing a targeted field as a Dictionary
Structured Field (§2.1), and choosing the field that decides the policy (§2.2)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.policy.directives import cache_control_of
from proxy.policy.targeted import effective_headers, targeted_directives

TARGETS = ("Pixcache-Cache-Control", "CDN-Cache-Control", "Surrogate-Control")


@pytest.mark.parametrize(
    ("lines", "directives"),
    [
        # A Dictionary whose members are directives; a bare key is Boolean true (no argument).
        (["max-age=3600"], {"max-age": "3600"}),
        (["no-store"], {"no-store": None}),
        (["private, must-revalidate"], {"private": None, "must-revalidate": None}),
        # Extension directives are kept (the rules ignore them), with any type.
        (["foobar, max-age=3600"], {"foobar": None, "max-age": "3600"}),
        (['ext=1.5, other=tok, str="x"'], {"ext": "1.5", "other": "tok", "str": "x"}),
        # A field with only an unknown directive is valid and non-empty (§3.1's `none`).
        (["none"], {"none": None}),
        # Integers of up to 15 digits parse; the policy caps delta-seconds (RFC 9111 §1.2.2).
        (["max-age=99999999999"], {"max-age": "99999999999"}),
        (["s-maxage=0, stale-if-error=60"], {"s-maxage": "0", "stale-if-error": "60"}),
        # no-cache and private take Boolean true or a String of field names.
        (['no-cache="set-cookie, x-a"'], {"no-cache": "set-cookie, x-a"}),
        (['private="authorization"'], {"private": "authorization"}),
        # Parameters on members are ignored.
        (["max-age=60;foo=bar, no-transform;x"], {"max-age": "60", "no-transform": None}),
        # RFC 8941 §4.2: several field lines are one value; §4.2.2: the last duplicate wins.
        (["max-age=60", "must-revalidate"], {"max-age": "60", "must-revalidate": None}),
        (["max-age=1, max-age=2"], {"max-age": "2"}),
        # RFC 8941 §4.2: leading and trailing spaces are not part of the value.
        (["  max-age=60  "], {"max-age": "60"}),
        # Empty (or absent): the field is ignored.
        ([], None),
        ([""], None),
        (["   "], None),
        # Not a valid Dictionary: the whole field is ignored.
        (["max-age=10000, &&&&&"], None),
        (["max-age =100"], None),  # no whitespace around `=`
        (["max-age= 100"], None),
        (["MaX-aGe=3600"], None),  # keys are lower case (RFC 8941 §3.2)
        (["max-age=60,"], None),  # trailing comma
        (["max-age=60 no-store"], None),
        (["max-age=\u00e9"], None),  # not ASCII
        (["max-age=60", ""], {"max-age": "60"}),  # an empty line adds no member
        # A member whose value violates its directive's type: the whole field is ignored.
        (['max-age="10000"'], None),  # a String, not an Integer
        (["max-age=1.5"], None),  # a Decimal
        (["max-age=-1"], None),  # negative
        (["max-age=?1"], None),  # a Boolean
        (["max-age=(1 2)"], None),  # an Inner List
        (["max-age=abc"], None),  # a Token
        (["stale-while-revalidate=1.0"], None),
        (["no-store=?0"], None),  # no-store is always Boolean true
        (["no-store=1"], None),
        (['must-revalidate="yes"'], None),
        (["public=?0, max-age=60"], None),
        (["no-cache=set-cookie"], None),  # field names go in a String, not a Token
        (["private=1"], None),
        (["no-cache=?0"], None),
    ],
)
def test_rfc9213_2_1_targeted_field_is_a_dictionary(
    lines: list[str], directives: dict[str, str | None] | None
) -> None:
    parsed = targeted_directives(lines)
    assert (parsed.directives if parsed is not None else None) == directives


def _policy_cache_control(pairs: list[tuple[str, str]]) -> tuple[dict[str, str | None], bool]:
    """The Cache-Control the policy reads, and whether Expires is still in its headers."""
    headers = effective_headers(CIMultiDict(pairs), TARGETS)
    return cache_control_of(headers).directives, "expires" in headers


EXPIRES = ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")


@pytest.mark.parametrize(
    ("pairs", "policy", "expires_kept"),
    [
        # No targeted field: Cache-Control and Expires apply as usual.
        ([("Cache-Control", "max-age=1"), EXPIRES], {"max-age": "1"}, True),
        # A valid, non-empty targeted field decides; Cache-Control and Expires are ignored.
        (
            [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=600"), EXPIRES],
            {"max-age": "600"},
            False,
        ),
        ([("CDN-Cache-Control", "none"), ("Cache-Control", "no-store")], {"none": None}, False),
        # The first field of the target list with a valid, non-empty value is used.
        (
            [("CDN-Cache-Control", "no-store"), ("Pixcache-Cache-Control", "max-age=60")],
            {"max-age": "60"},
            False,
        ),
        (
            [("Surrogate-Control", "max-age=5"), ("CDN-Cache-Control", "max-age=60")],
            {"max-age": "60"},
            False,
        ),
        # An invalid field is skipped for the next one in the list...
        (
            [("Pixcache-Cache-Control", "max-age=1.5"), ("CDN-Cache-Control", "max-age=60")],
            {"max-age": "60"},
            False,
        ),
        (
            [("CDN-Cache-Control", 'max-age="60"'), ("Surrogate-Control", "max-age=5")],
            {"max-age": "5"},
            False,
        ),
        # ...and without a valid one, Cache-Control and Expires apply again.
        (
            [("CDN-Cache-Control", "max-age=10000, &&&&&"), ("Cache-Control", "no-store")],
            {"no-store": None},
            False,
        ),
        (
            [("CDN-Cache-Control", "no-store=?0"), ("Cache-Control", "max-age=1"), EXPIRES],
            {"max-age": "1"},
            True,
        ),
        # An empty targeted field is ignored.
        ([("CDN-Cache-Control", ""), ("Cache-Control", "max-age=1")], {"max-age": "1"}, False),
        # Field names are case-insensitive (RFC 9110 §5.1).
        (
            [("cdn-cache-control", "max-age=60"), ("Cache-Control", "no-store")],
            {"max-age": "60"},
            False,
        ),
        # Surrogate-Control is no Structured Field: it keeps its Edge Architecture parsing,
        # upper-case names and targeting included.
        (
            [("Surrogate-Control", "MAX-AGE=30, no-store;other"), ("Cache-Control", "no-store")],
            {"max-age": "30"},
            False,
        ),
        # Arguments reach the policy as Cache-Control reads them (quoted where they must be).
        (
            [("CDN-Cache-Control", 'no-cache="a, b", max-age=60')],
            {"no-cache": "a, b", "max-age": "60"},
            False,
        ),
        (
            [("CDN-Cache-Control", 'ext="q\\"uote\\\\", private')],
            {"ext": 'q"uote\\', "private": None},
            False,
        ),
    ],
)
def test_rfc9213_2_2_first_valid_targeted_field_decides(
    pairs: list[tuple[str, str]], policy: dict[str, str | None], expires_kept: bool
) -> None:
    assert _policy_cache_control(pairs) == (policy, expires_kept)


def test_rfc9213_2_2_fields_off_the_target_list_change_nothing() -> None:
    headers = CIMultiDict([("Other-Cache-Control", "max-age=600"), ("Cache-Control", "no-store")])
    assert effective_headers(headers, TARGETS) is headers
    assert effective_headers(headers, ()) is headers
