"""Canonical forms of selecting request fields (RFC 9111 §4.1): equivalent requests select
the same variant, non-equivalent ones do not. One table per field's section of RFC 9110;
each row is (first value, second value, whether they are equivalent)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.policy.negotiation import NEGOTIATION_FIELDS, canonical_value, list_form
from proxy.policy.vary import selecting_value


def same_variant(name: str, first: str, second: str) -> bool:
    return selecting_value(CIMultiDict({name: first}), name) == selecting_value(
        CIMultiDict({name: second}), name
    )


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        # §12.5.3: content codings are case-insensitive (§8.4.1)...
        ("gzip, br", "BR,gzip", True),
        ("GZIP", "gzip", True),
        # ...whitespace around `,` and `;` is not significant (§5.6.1, §12.4.2 OWS)...
        ("gzip;q=0.5,br", "gzip ; q=0.5 , br", True),
        # ...order is not: weights express preference (§12.4.2)...
        ("br;q=0.5, gzip", "gzip, br;q=0.5", True),
        # ...but weights are never dropped: they change what is acceptable.
        ("gzip, br", "gzip, br;q=0.5", False),
        ("gzip, br;q=0", "gzip, br", False),
        ("gzip;q=0.5", "gzip;q=0.4", False),
        # §12.4.2: no weight is q=1, and trailing zeros do not change a qvalue.
        ("gzip;q=1", "gzip", True),
        ("gzip;q=1.000", "gzip", True),
        ("gzip;Q=0.50", "gzip;q=0.5", True),
        ("gzip;q=0.0", "gzip;q=0", True),
        # Different codings, or one more or one fewer, are different requests.
        ("gzip", "br", False),
        ("gzip", "gzip, br", False),
        ("gzip, identity", "gzip", False),
        ("*", "gzip", False),
        # §5.6.1: empty list members are ignored.
        ("gzip,, br", "br, gzip", True),
        # An invalid weight or extra parameter: the value is not reinterpreted.
        ("gzip;q=2", "gzip", False),
        ("gzip;q=0.5000", "gzip;q=0.5", False),
        ("gzip;level=1", "gzip", False),
        ("gzip;q=0.5;q=0.5", "gzip;q=0.5", False),
        ("gzip;", "gzip", False),
    ],
)
def test_rfc9110_12_5_3_accept_encoding(first: str, second: str, same: bool) -> None:
    assert same_variant("Accept-Encoding", first, second) is same


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        # RFC 4647 §2.1: language ranges are case-insensitive.
        ("en-US", "en-us", True),
        ("EN-gb, FR", "en-GB, fr", True),
        # §12.4.2: weights express preference, not positions (see proxy/policy/negotiation.py).
        ("en, de", "de, en", True),
        ("en-US,en;q=0.9,de;q=0.8", "de;q=0.8, en;q=0.9, en-US", True),
        ("en;q=0.9", "en;q=0.90", True),
        # Different languages, ranges or weights are different requests.
        ("en", "en-US", False),
        ("en, de", "en, de;q=0.5", False),
        ("en", "*", False),
        ("de", "en", False),
        # Not a language range (RFC 4647 §2.1): kept as sent, modulo list whitespace.
        ("en_US", "en_us", False),
        ("en_US , de", "en_US, de", True),
        ("toolonglanguage", "toolonglanguage", True),
    ],
)
def test_rfc9110_12_5_4_accept_language(first: str, second: str, same: bool) -> None:
    assert same_variant("Accept-Language", first, second) is same


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("UTF-8, iso-8859-1;q=0.5", "iso-8859-1;q=0.5,utf-8", True),  # §8.3.2: case-insensitive
        ("utf-8", "utf-8;q=0.5", False),
        ("utf-8", "*", False),
    ],
)
def test_rfc9110_12_5_2_accept_charset(first: str, second: str, same: bool) -> None:
    assert same_variant("Accept-Charset", first, second) is same


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        # §8.3.1: type, subtype and parameter names are case-insensitive.
        ("image/AVIF, image/webp", "image/webp,image/avif", True),
        ("Text/HTML;Level=1", "text/html;level=1", True),
        # §12.4.2: weights, not positions; a weight is kept with its range.
        ("image/avif,image/webp,*/*;q=0.8", "*/*;q=0.8, image/webp, image/avif", True),
        ("image/webp, */*", "image/webp, */*;q=0.8", False),
        ("image/webp;q=0.9, image/avif", "image/webp, image/avif;q=0.9", False),
        # §5.6.6: a token and the same quoted-string are one value; OWS around `;`.
        ('text/html;level="1"', "text/html ; level=1", True),
        ('text/plain;format="a b"', "text/plain;format=a", False),
        # Parameter values are case-sensitive unless defined otherwise (§8.3.1); charset
        # values are not (§8.3.2).
        ("text/plain;format=Flowed", "text/plain;format=flowed", False),
        ("text/plain;charset=UTF-8", 'text/plain;charset="utf-8"', True),
        # Parameter order within a range is kept.
        ("a/b;x=1;y=2", "a/b;y=2;x=1", False),
        # Different ranges are different requests.
        ("image/webp", "image/avif", False),
        ("image/*", "image/webp", False),
        ("image/webp", "image/webp;x=1", False),
        # A comma inside a quoted parameter value does not separate members.
        ('a/b;x="1, 2"', 'a/b;x="1, 2"', True),
        ('a/b;x="1, 2"', "a/b;x=1, a/b;x=2", False),
        # Not the grammar (a parameter after the weight, `*/subtype`): kept as sent.
        ("text/html;q=0.5;level=1", "text/html;level=1;q=0.5", False),
        ("*/html", "*/HTML", False),
        ("text/html;level", "text/html;level", True),
        ("text/html;level", "text/html", False),
    ],
)
def test_rfc9110_12_5_1_accept(first: str, second: str, same: bool) -> None:
    assert same_variant("Accept", first, second) is same


@pytest.mark.parametrize(
    ("name", "lines", "other_lines", "same"),
    [
        # RFC 9110 §5.3: several field lines are one list, in order.
        ("Accept-Encoding", ["gzip", "br"], ["gzip, br"], True),
        ("Accept-Encoding", ["br", "GZIP"], ["gzip, br"], True),
        ("Accept", ["image/webp", "image/avif"], ["image/avif, image/webp"], True),
        ("Accept-Language", ["en", "", "de"], ["de, en"], True),
        # A field no grammar is known for keeps its members in order; whitespace around
        # top-level commas is dropped (§5.6.1).
        ("Foo", ["1,2"], [" 1, 2 "], True),
        ("Foo", ["1", "2"], ["1, 2"], True),
        ("Foo", ["1, 2"], ["2, 1"], False),
        ("Foo", ["A"], ["a"], False),
        ("Foo", ['"x, y"'], ['"x,y"'], False),  # inside a quoted string, it is content
        ("Foo", ["a;b"], ["a; b"], False),  # `;` means nothing in an unknown field
    ],
)
def test_rfc9110_5_3_field_lines_are_combined(
    name: str, lines: list[str], other_lines: list[str], same: bool
) -> None:
    first = CIMultiDict((name, line) for line in lines)
    second = CIMultiDict((name, line) for line in other_lines)
    assert (selecting_value(first, name) == selecting_value(second, name)) is same


def test_the_canonicalised_fields_are_the_negotiation_fields() -> None:
    assert sorted(NEGOTIATION_FIELDS) == [
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
    ]


# Values made of the characters these grammars are built from, and a few others.
field_text = st.text(alphabet=' \t,;=/*"\\-.qQ01589aAbBzZ_\u00e9', max_size=24)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(NEGOTIATION_FIELDS) + ["foo"]), field_text)
def test_rfc9111_4_1_a_canonical_value_is_its_own_canonical_form(name: str, value: str) -> None:
    """What makes entries stored by older versions safe (proxy/policy/vary.py): a value
    stored in canonical form selects only requests whose canonical form it is."""
    canonical = selecting_value(CIMultiDict({name: value}), name)
    assert canonical is not None
    assert selecting_value(CIMultiDict({name: canonical}), name) == canonical


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(NEGOTIATION_FIELDS)), field_text)
def test_rfc9111_4_1_a_value_off_the_grammar_never_looks_canonical(name: str, value: str) -> None:
    """A value that does not follow its field's grammar gets the list form only, and that
    form does not follow the grammar either: it can never equal a canonical value."""
    if NEGOTIATION_FIELDS[name](value) is None:
        assert NEGOTIATION_FIELDS[name](list_form(value)) is None
        assert canonical_value(name, value) == list_form(value)
