"""RFC 9110 §14: parsing a Range field, one table per section; coalescing of overlapping
ranges; the Content-Range of a 206 (§14.4) and when it carries the whole representation
(RFC 9111 §3.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.policy.ranges import (
    ByteRange,
    ContentRange,
    Unsatisfiable,
    as_complete,
    parse_content_range,
    parse_range,
    whole_representation,
)

N = 1000

# (Range field, ranges sent as (first, last) pairs; None: ignored, the whole body is sent)
TABLE: list[tuple[str, list[tuple[int, int]] | None]] = [
    # §14.1.2: first-last, first-, and the suffix -N
    ("bytes=0-9", [(0, 9)]),
    ("bytes=990-", [(990, 999)]),
    ("bytes=-5", [(995, 999)]),
    ("bytes=995-5000", [(995, 999)]),  # a last past the end is the end
    ("BYTES = 0-0", [(0, 0)]),  # the unit is case-insensitive
    # §14.2: coalescing: overlapping, touching, or closer than a part's overhead
    ("bytes=0-, 0-, 0-, 0-", [(0, 999)]),
    ("bytes=" + ", ".join(["0-"] * 16), [(0, 999)]),
    ("bytes=0-99, 50-149", [(0, 149)]),
    ("bytes=0-99, 100-199", [(0, 199)]),
    ("bytes=0-9, 20-29", [(0, 29)]),  # a 10-byte gap costs less than a part header
    ("bytes=0-9, 500-509", [(0, 9), (500, 509)]),
    ("bytes=500-509, 0-9", [(0, 9), (500, 509)]),  # ascending order
    ("bytes=-5, 0-", [(0, 999)]),
    ("bytes=0-9, 200-209, -10", [(0, 9), (200, 209), (990, 999)]),
    # §14.2: a field that cannot be parsed is ignored
    ("bytes=abc", None),
    ("bytes=10-5", None),
    ("bytes=", None),
    ("pages=1-2", None),
    ("bytes 0-9", None),
    ("bytes=-", None),
    ("bytes=" + ", ".join(f"{i * 50}-{i * 50}" for i in range(17)), None),  # too many
]


@pytest.mark.parametrize(("value", "expected"), TABLE)
def test_range_table(value: str, expected: list[tuple[int, int]] | None) -> None:
    got = parse_range(value, N)
    if expected is None:
        assert got is None
    else:
        assert got == [ByteRange(a, b) for a, b in expected]


@pytest.mark.parametrize("value", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable(value: str) -> None:
    """§15.5.17: no range overlaps the representation: 416."""
    with pytest.raises(Unsatisfiable):
        parse_range(value, N)


specs = st.lists(
    st.tuples(st.integers(0, 2 * N), st.integers(0, 2 * N)).map(sorted), min_size=1, max_size=16
)


@given(specs)
def test_no_byte_is_sent_twice(pairs: list[list[int]]) -> None:
    """Whatever ranges a client asks for, the parts sent are disjoint and ascending, so the
    body bytes of a 206 never exceed the representation's length (no amplification), and
    every byte asked for that exists is in some part."""
    value = "bytes=" + ",".join(f"{a}-{b}" for a, b in pairs)
    try:
        got = parse_range(value, N)
    except Unsatisfiable:
        assert all(a >= N for a, _ in pairs)
        return
    assert got is not None
    assert sum(r.length for r in got) <= N
    for before, after in zip(got, got[1:], strict=False):
        assert before.end < after.start
    for a, b in pairs:
        for byte in {a, min(b, N - 1)}:
            if byte < N and a < N:
                assert any(r.start <= byte <= r.end for r in got)


# RFC 9110 §14.1.1-§14.1.2 at the edges: (Range field, representation length, ranges sent;
# None: the Range is ignored and the whole sent; "416": unsatisfiable, rule)
EDGES: list[tuple[str, int, list[tuple[int, int]] | None | str, str]] = [
    ("bytes=0-0", 1, [(0, 0)], "§14.1.2: first-last is inclusive: one byte"),
    ("bytes=-1", 1, [(0, 0)], "§14.1.2: the last byte"),
    ("bytes=-5", 3, [(0, 2)], "§14.1.2: a suffix longer than the whole is the whole"),
    ("bytes=2-1", 10, None, "§14.1.1: last before first makes the field invalid: ignored"),
    ("bytes=0-1, 5-2", 10, None, "§14.1.1: one invalid range-spec invalidates the set"),
    ("bytes=10-, 0-0", 10, [(0, 0)], "§14.1.1: the set is satisfiable if one spec is"),
    ("bytes=10-", 10, "416", "§14.1.1: first-pos at the length: unsatisfiable"),
    ("bytes=-0", 10, "416", "§14.1.1: a zero suffix-length is unsatisfiable"),
    ("bytes=0-", 0, "416", "§14.1.1: of zero length, no first-pos is satisfiable"),
    ("bytes=-5", 0, None, "§14.1.1: a non-zero suffix is, and no 206 can carry 0 bytes"),
    ("bytes=1-2,", 10, [(1, 2)], "§5.6.1: empty list elements are not range-specs"),
]


@pytest.mark.parametrize(("value", "length", "expected", "rule"), EDGES)
def test_rfc9110_14_1_range_edges(
    value: str, length: int, expected: list[tuple[int, int]] | None | str, rule: str
) -> None:
    if expected == "416":
        with pytest.raises(Unsatisfiable):
            parse_range(value, length)
        return
    got = parse_range(value, length)
    if expected is None:
        assert got is None, rule
    else:
        assert isinstance(expected, list)
        assert got == [ByteRange(a, b) for a, b in expected], rule


# RFC 9110 §14.4 Content-Range: (field, parsed as (first, last, complete length), rule)
CONTENT_RANGE: list[tuple[str | None, tuple[int, int, int | None] | None, str]] = [
    ("bytes 0-9/10", (0, 9, 10), "range-resp with a complete-length"),
    ("bytes 4-9/10", (4, 9, 10), "a range that is not at the start"),
    ("bytes 0-9/*", (0, 9, None), "the complete length may be unknown"),
    ("BYTES 0-0/1", (0, 0, 1), "the range unit is case-insensitive"),
    ("bytes */10", None, "unsatisfied-range (of a 416) carries no bytes"),
    ("bytes 5-4/10", None, "last before first: invalid"),
    ("bytes 0-10/10", None, "the last byte at the complete length: invalid"),
    ("bytes 0-9", None, "no complete-length part"),
    ("items 0-9/10", None, "another range unit"),
    ("bytes -1-9/10", None, "no sign in a position"),
    (None, None, "absent"),
]


@pytest.mark.parametrize(("value", "expected", "rule"), CONTENT_RANGE)
def test_rfc9110_14_4_content_range(
    value: str | None, expected: tuple[int, int, int | None] | None, rule: str
) -> None:
    got = parse_content_range(value)
    assert got == (None if expected is None else ContentRange(*expected)), rule


# RFC 9111 §3.4: when a 206 is the complete representation (and may be stored as the 200
# it then is): (Content-Range, Content-Length, complete length or None, rule)
WHOLE: list[tuple[str | None, int | None, int | None, str]] = [
    ("bytes 0-9/10", 10, 10, "from the first byte to the last of all ten"),
    ("bytes 0-9/10", None, 10, "no Content-Length: the range says how long"),
    ("bytes 0-0/1", 1, 1, "a one-byte representation"),
    ("bytes 0-4/10", 5, None, "only the first half"),
    ("bytes 4-9/10", 6, None, "only the second half"),
    ("bytes 0-9/*", 10, None, "the complete length is unknown: maybe more follows"),
    ("bytes 0-9/10", 5, None, "a Content-Length that disagrees with the range"),
    (None, 10, None, "no Content-Range (a multipart/byteranges 206)"),
]


@pytest.mark.parametrize(("value", "length", "expected", "rule"), WHOLE)
def test_rfc9111_3_4_a_206_of_the_whole_representation(
    value: str | None, length: int | None, expected: int | None, rule: str
) -> None:
    assert whole_representation(value, length) == expected, rule


@pytest.mark.parametrize(
    ("status", "content_range", "length", "complete"),
    [
        (206, "bytes 0-9/10", 10, True),  # RFC 9111 §3.4: the whole representation
        (206, "bytes 0-4/10", 5, False),  # a part stays a 206
        (206, "bytes 0-9/10", None, False),  # no length to check the body against
        (200, None, 10, False),
    ],
)
def test_rfc9111_3_4_a_206_of_the_whole_is_a_200(
    status: int, content_range: str | None, length: int | None, complete: bool
) -> None:
    headers = CIMultiDict({"Content-Type": "image/png"})
    if content_range is not None:
        headers["Content-Range"] = content_range
    made = as_complete(status, headers, length)
    assert (made is not None) is complete
    if made is not None:
        assert "Content-Range" not in made and made["Content-Type"] == "image/png"
