"""Secondary cache keys (RFC 9111 §4.1)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.policy.vary import normalized_value, vary_fields, vary_matches, vary_values


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], ()),
        ([""], ()),
        (["Accept-Encoding"], ("accept-encoding",)),
        # Field names are case-insensitive, listed once, in a stable order.
        (["Accept-Encoding, accept-encoding,  Accept"], ("accept", "accept-encoding")),
        # Several Vary lines are combined (RFC 9110 §5.3).
        (["Width", "DPR, width"], ("dpr", "width")),
        (["*"], ("*",)),
    ],
)
def test_rfc9111_4_1_vary_fields(lines: list[str], expected: tuple[str, ...]) -> None:
    assert vary_fields(h(*(("Vary", line) for line in lines))) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # §4.1: an absent field is distinct from an empty one.
        ([], None),
        ([""], ""),
        # Whitespace is normalised...
        (["gzip,  br"], "gzip, br"),
        (["  gzip\t, br  "], "gzip , br"),
        (["image/avif,\timage/webp"], "image/avif, image/webp"),
        # ...and several lines are combined as one list.
        (["gzip", "br"], "gzip, br"),
    ],
)
def test_rfc9111_4_1_normalized_value(lines: list[str], expected: str | None) -> None:
    headers = h(*(("Accept-Encoding", line) for line in lines))
    assert normalized_value(headers, "accept-encoding") == expected


def test_rfc9111_4_1_vary_values_records_absent_as_none() -> None:
    request = h(("Accept", "image/webp"), ("X-Other", "1"))
    assert vary_values(("accept", "accept-encoding"), request) == {
        "accept": "image/webp",
        "accept-encoding": None,
    }


STORED_REQUEST = h(("Accept", "image/webp,  image/*"), ("Accept-Encoding", "gzip"))
FIELDS = ("accept", "accept-encoding")
STORED = vary_values(FIELDS, STORED_REQUEST)


@pytest.mark.parametrize(
    ("request_pairs", "matches"),
    [
        # Same values, names in another case.
        ([("ACCEPT", "image/webp,  image/*"), ("accept-encoding", "gzip")], True),
        # Whitespace differences only.
        ([("Accept", " image/webp,\timage/* "), ("Accept-Encoding", "gzip ")], True),
        # The same list split over two lines.
        ([("Accept", "image/webp"), ("Accept", "image/*"), ("Accept-Encoding", "gzip")], True),
        # A different value.
        ([("Accept", "image/avif"), ("Accept-Encoding", "gzip")], False),
        # Absent where the stored request had a value.
        ([("Accept", "image/webp, image/*")], False),
        # Empty where the stored request had a value.
        ([("Accept", "image/webp, image/*"), ("Accept-Encoding", "")], False),
        # Unrelated fields do not matter.
        ([("Accept", "image/webp, image/*"), ("Accept-Encoding", "gzip"), ("DPR", "2")], True),
    ],
)
def test_rfc9111_4_1_vary_matches(request_pairs: list[tuple[str, str]], matches: bool) -> None:
    assert vary_matches(FIELDS, STORED, h(*request_pairs)) is matches


def test_rfc9111_4_1_absent_and_empty_do_not_match_each_other() -> None:
    stored_absent = vary_values(("dpr",), h())
    stored_empty = vary_values(("dpr",), h(("DPR", "")))
    assert vary_matches(("dpr",), stored_absent, h())
    assert not vary_matches(("dpr",), stored_absent, h(("DPR", "")))
    assert vary_matches(("dpr",), stored_empty, h(("DPR", "")))
    assert not vary_matches(("dpr",), stored_empty, h())


def test_rfc9111_4_1_vary_star_never_matches() -> None:
    request = h(("Accept", "image/webp"))
    assert not vary_matches(("*",), {"*": None}, request)
    assert not vary_matches(("*", "accept"), vary_values(("accept",), request), request)


def test_rfc9111_4_1_no_vary_fields_always_matches() -> None:
    assert vary_matches((), {}, h(("Accept", "anything")))


@pytest.mark.parametrize(
    ("request_pairs", "stored_values", "matches"),
    [
        # §4.1: a request selects a variant stored for an equivalent one.
        ([("Accept-Encoding", "gzip, br")], {"accept-encoding": "br, gzip"}, True),
        ([("accept-encoding", "BR,gzip")], {"accept-encoding": "br, gzip"}, True),
        ([("Accept-Encoding", "gzip, br")], {"accept-encoding": "gzip"}, False),
        # Entries stored by versions before canonical forms hold normalized_value's form:
        # one that happens to be canonical matches exactly the requests equivalent to it...
        ([("Accept-Encoding", "gzip")], {"accept-encoding": "gzip"}, True),
        ([("Accept-Encoding", "GZIP")], {"accept-encoding": "gzip"}, True),
        # ...and any other is a vary-miss, never a wrong variant.
        ([("Accept-Encoding", "gzip, br")], {"accept-encoding": "gzip, br"}, False),
        ([("Accept-Encoding", "GZIP")], {"accept-encoding": "GZIP"}, False),
        ([("Accept-Language", "en-US")], {"accept-language": "en-US"}, False),
        ([("Foo", "1,2")], {"foo": "1,2"}, False),
        ([("Foo", "1, 2")], {"foo": "1, 2"}, True),
    ],
)
def test_rfc9111_4_1_stored_values_match_equivalent_requests_only(
    request_pairs: list[tuple[str, str]], stored_values: dict[str, str | None], matches: bool
) -> None:
    fields = tuple(stored_values)
    assert vary_matches(fields, stored_values, h(*request_pairs)) is matches


@pytest.mark.parametrize("name", ["Authorization", "Cookie", "Proxy-Authorization"])
def test_rfc9111_4_1_credentials_select_variants_by_digest_alone(name: str) -> None:
    alice = CIMultiDict({name: "secret-of-alice"})
    stored = vary_values((name.lower(),), alice)
    assert "secret-of-alice" not in str(stored)  # what the stored head keeps
    assert vary_matches((name.lower(),), stored, CIMultiDict({name: "secret-of-alice"}))
    assert not vary_matches((name.lower(),), stored, CIMultiDict({name: "secret-of-bob"}))
    assert not vary_matches((name.lower(),), stored, CIMultiDict())
