"""RFC 9110 §14: parsing a Range field, one table; coalescing of overlapping ranges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.policy.ranges import ByteRange, Unsatisfiable, parse_range

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
