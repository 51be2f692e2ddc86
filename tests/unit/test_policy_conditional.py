"""Conditional requests answered by the cache (RFC 9110 §13, RFC 9111 §4.3): one table per
section, each row citing the rule it checks."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.policy.conditional import (
    if_range_allows,
    not_modified,
    strong_match,
    updated_headers,
    validators_for,
    weak_match,
)

LM = "Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = "Sat, 05 Nov 1994 08:49:37 GMT"
AFTER = "Mon, 07 Nov 1994 08:49:37 GMT"
STORED = CIMultiDict({"ETag": '"v1"', "Last-Modified": LM, "Date": AFTER})


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


# RFC 9110 §8.8.3.2: (a, b, strong match, weak match, rule)
COMPARISON = [
    ('"1"', '"1"', True, True, "identical strong tags match either way"),
    ('W/"1"', 'W/"1"', False, True, "weak tags never match strongly"),
    ('W/"1"', '"1"', False, True, "weak comparison ignores W/"),
    ('"1"', '"2"', False, False, "different opaque tags never match"),
    ('"1"', ' "1" ', True, True, "surrounding whitespace is not part of the tag"),
]


@pytest.mark.parametrize(("a", "b", "strong", "weak", "rule"), COMPARISON)
def test_rfc9110_8_8_3_2_entity_tag_comparison(
    a: str, b: str, strong: bool, weak: bool, rule: str
) -> None:
    assert strong_match(a, b) is strong, rule
    assert weak_match(a, b) is weak, rule


# RFC 9110 §13.1.1 If-Match and §13.1.4 If-Unmodified-Since: RFC 9111 §4.3.2 says they
# are not applicable to a cache, which serves the stored response as if they were absent.
# (request fields, 304, rule)
ORIGIN_ONLY = [
    (h(("If-Match", '"other"')), False, "§13.1.1: a failing If-Match is not the cache's 412"),
    (h(("If-Match", '"v1"')), False, "§13.1.1: a matching If-Match is no 304 either"),
    (h(("If-Unmodified-Since", BEFORE)), False, "§13.1.4: not evaluated by a cache"),
    (h(("If-Unmodified-Since", AFTER)), False, "§13.1.4: not evaluated by a cache"),
]


@pytest.mark.parametrize(("request_fields", "expected", "rule"), ORIGIN_ONLY)
def test_rfc9110_13_1_1_and_13_1_4_are_left_to_the_origin(
    request_fields: CIMultiDict[str], expected: bool, rule: str
) -> None:
    assert not_modified(request_fields, STORED) is expected, rule


# RFC 9110 §13.1.2 If-None-Match: (request fields, stored fields, 304, rule)
IF_NONE_MATCH = [
    (h(("If-None-Match", '"v1"')), STORED, True, "a listed tag matches"),
    (h(("If-None-Match", 'W/"v1"')), STORED, True, "weak comparison: W/ matches strong"),
    (h(("If-None-Match", '"a", "v1"')), STORED, True, "any member of the list may match"),
    (h(("If-None-Match", '"a"'), ("If-None-Match", '"v1"')), STORED, True, "over two lines"),
    (h(("If-None-Match", '"v2"')), STORED, False, "no member matches: the full response"),
    (h(("If-None-Match", "*")), STORED, True, "* matches any current representation"),
    (h(("If-None-Match", '"v1"')), h(("Last-Modified", LM)), False, "no ETag: nothing matches"),
    (h(("If-None-Match", '"a,b"')), h(("ETag", '"a,b"')), True, "a comma inside a tag"),
]


@pytest.mark.parametrize(("request_fields", "stored", "expected", "rule"), IF_NONE_MATCH)
def test_rfc9110_13_1_2_if_none_match(
    request_fields: CIMultiDict[str], stored: CIMultiDict[str], expected: bool, rule: str
) -> None:
    assert not_modified(request_fields, stored) is expected, rule


# RFC 9110 §13.1.3 If-Modified-Since (with RFC 9111 §4.3.2 for a cache):
# (request fields, stored fields, 304, rule)
IF_MODIFIED_SINCE = [
    (h(("If-Modified-Since", LM)), STORED, True, "Last-Modified equal to the date: unmodified"),
    (h(("If-Modified-Since", AFTER)), STORED, True, "Last-Modified before the date"),
    (h(("If-Modified-Since", BEFORE)), STORED, False, "modified since the date"),
    (h(("If-Modified-Since", "yesterday")), STORED, False, "not an HTTP-date: ignored"),
    (
        h(("If-Modified-Since", LM), ("If-Modified-Since", LM)),
        STORED,
        False,
        "more than one member: ignored",
    ),
    (
        h(("If-Modified-Since", AFTER)),
        h(("Date", LM)),
        True,
        "RFC 9111 §4.3.2: no Last-Modified, the stored Date is used",
    ),
    (
        h(("If-Modified-Since", BEFORE)),
        h(("Date", LM)),
        False,
        "RFC 9111 §4.3.2: the stored Date is after the date",
    ),
    (h(("If-Modified-Since", AFTER)), h(), False, "neither Last-Modified nor Date: no 304"),
]


@pytest.mark.parametrize(("request_fields", "stored", "expected", "rule"), IF_MODIFIED_SINCE)
def test_rfc9110_13_1_3_if_modified_since(
    request_fields: CIMultiDict[str], stored: CIMultiDict[str], expected: bool, rule: str
) -> None:
    assert not_modified(request_fields, stored) is expected, rule


# RFC 9110 §13.1.5 If-Range (and §14.2): does the Range still apply?
# (request fields, stored fields, Range applies, rule)
IF_RANGE = [
    (h(), STORED, True, "no If-Range: the Range applies"),
    (h(("If-Range", '"v1"')), STORED, True, "the entity-tag matches strongly"),
    (h(("If-Range", '"v2"')), STORED, False, "another entity-tag: the whole representation"),
    (h(("If-Range", 'W/"v1"')), STORED, False, "a weak tag never matches (strong comparison)"),
    (h(("If-Range", '"v1"')), h(("ETag", 'W/"v1"')), False, "a weak stored tag never matches"),
    (h(("If-Range", '"v1"')), h(("Last-Modified", LM)), False, "no stored ETag to compare"),
    (h(("If-Range", LM)), STORED, True, "a date exactly equal to Last-Modified"),
    (h(("If-Range", AFTER)), STORED, False, "a date that is not Last-Modified"),
    (h(("If-Range", LM)), h(("ETag", '"v1"')), False, "no stored Last-Modified to compare"),
    (h(("If-Range", "not a date")), STORED, False, "neither tag nor date: no range"),
]


@pytest.mark.parametrize(("request_fields", "stored", "expected", "rule"), IF_RANGE)
def test_rfc9110_13_1_5_if_range(
    request_fields: CIMultiDict[str], stored: CIMultiDict[str], expected: bool, rule: str
) -> None:
    assert if_range_allows(request_fields, stored) is expected, rule


# RFC 9110 §13.2.2: the order in which a recipient evaluates the preconditions; for a
# cache (RFC 9111 §4.3.2) steps 1-2 do not apply, If-None-Match decides when present and
# If-Modified-Since is evaluated only without it. (request fields, 304, rule)
PRECEDENCE = [
    (
        h(("If-None-Match", '"v2"'), ("If-Modified-Since", AFTER)),
        False,
        "step 3: a failing If-None-Match decides; the passing date is never looked at",
    ),
    (
        h(("If-None-Match", '"v1"'), ("If-Modified-Since", BEFORE)),
        True,
        "step 3: a matching If-None-Match decides; the failing date is never looked at",
    ),
    (
        h(("If-Match", '"v2"'), ("If-None-Match", '"v1"')),
        True,
        "steps 1-2 are not a cache's (RFC 9111 §4.3.2): If-None-Match decides",
    ),
    (
        h(("If-Unmodified-Since", BEFORE), ("If-Modified-Since", AFTER)),
        True,
        "step 4: without If-None-Match, If-Modified-Since decides",
    ),
]


@pytest.mark.parametrize(("request_fields", "expected", "rule"), PRECEDENCE)
def test_rfc9110_13_2_2_precedence(
    request_fields: CIMultiDict[str], expected: bool, rule: str
) -> None:
    assert not_modified(request_fields, STORED) is expected, rule


# RFC 9111 §4.3.1: the validators a revalidation sends. (stored fields, sent, rule)
VALIDATORS = [
    (STORED, {"If-None-Match": '"v1"', "If-Modified-Since": LM}, "both, from ETag and LM"),
    (h(("ETag", 'W/"x"')), {"If-None-Match": 'W/"x"'}, "a weak ETag is sent as it is"),
    (h(("Date", LM)), {}, "no validator: an unconditional request"),
]


@pytest.mark.parametrize(("stored", "sent", "rule"), VALIDATORS)
def test_rfc9111_4_3_1_validators_sent(
    stored: CIMultiDict[str], sent: dict[str, str], rule: str
) -> None:
    assert dict(validators_for(stored)) == sent, rule


# RFC 9111 §3.2 and §4.3.4: the stored fields after a 304. (newer fields, kept, rule)
UPDATES = [
    (h(("Cache-Control", "max-age=60")), ("Cache-Control", "max-age=60"), "replaced"),
    (h(("X-New", "1")), ("X-New", "1"), "a new field is added"),
    (h(("Content-Length", "99")), ("Content-Length", "5"), "§3.2: framing is not updated"),
    (h(("ETag", '"v2"')), ("ETag", '"v1"'), "§3.2: the ETag names the stored bytes"),
    (h(("Content-Encoding", "gzip")), ("Content-Encoding", "br"), "§3.2: describes the bytes"),
    (h(("Connection", "close")), None, "§3.1: hop-by-hop fields are never stored"),
]


@pytest.mark.parametrize(("newer", "kept", "rule"), UPDATES)
def test_rfc9111_3_2_headers_updated_by_a_304(
    newer: CIMultiDict[str], kept: tuple[str, str] | None, rule: str
) -> None:
    stored = h(
        ("Cache-Control", "max-age=1"),
        ("Content-Length", "5"),
        ("ETag", '"v1"'),
        ("Content-Encoding", "br"),
    )
    after = CIMultiDict(updated_headers(stored, newer))
    if kept is None:
        assert "connection" not in after, rule
    else:
        assert after.getall(kept[0]) == [kept[1]], rule
