"""Byte ranges (RFC 9110 §14)."""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDict

from proxy.policy.directives import Headers

# More ranges than this in one request are ignored and the whole body is sent (§14.2 lets a
# server ignore a Range; many small or overlapping ranges are a known abuse).
MAX_RANGES = 16
# §14.2: "a server MAY coalesce any of the ranges that overlap, or that are separated by a
# gap that is smaller than the overhead of sending multiple parts". A part's own header
# lines (boundary, Content-Type, Content-Range) take about this many bytes.
PART_OVERHEAD = 80


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


class Unsatisfiable(Exception):
    """§15.5.17: none of the ranges overlaps the representation: 416."""


def parse_range(value: str | None, length: int) -> list[ByteRange] | None:
    """The satisfiable ranges of a Range field, or None to ignore it (absent, not bytes,
    or invalid: §14.2 says to ignore a Range that cannot be parsed). Raises Unsatisfiable."""
    if value is None:
        return None
    unit, sep, spec = value.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    # RFC 9110 §5.6.1.2: empty list elements are ignored.
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or len(parts) > MAX_RANGES:
        return None
    ranges: list[ByteRange] = []
    empty_but_satisfiable = False
    for part in parts:
        first, dash, last = part.partition("-")
        first, last = first.strip(), last.strip()
        if not dash or (first and not first.isdigit()) or (last and not last.isdigit()):
            return None
        if not first:  # suffix-range: the last N bytes (§14.1.2)
            if not last:
                return None
            suffix = int(last)
            if suffix == 0:
                continue
            if length == 0:
                # §14.1.1: of a zero-length representation, a non-zero suffix-range is the
                # one satisfiable form; there are no bytes to send it as a 206 with.
                empty_but_satisfiable = True
                continue
            ranges.append(ByteRange(max(0, length - suffix), length - 1))
            continue
        start = int(first)
        end = length - 1 if not last else min(int(last), length - 1)
        if last and int(last) < start:
            return None  # §14.1.1: an invalid range-spec makes the whole field invalid
        if start >= length:
            continue  # unsatisfiable on its own
        ranges.append(ByteRange(start, end))
    if not ranges:
        if empty_but_satisfiable:
            return None  # §14.2: ignore the Range, the (empty) whole is the answer
        raise Unsatisfiable()
    return coalesced(ranges)


def coalesced(ranges: list[ByteRange]) -> list[ByteRange]:
    """The ranges in ascending order, with those that overlap, touch or lie closer than a
    part's overhead merged (§14.2). Every byte is then sent at most once, so a request of
    many overlapping ranges (16 × `0-`) costs one body, not sixteen (range amplification).
    The order may change: the RFC lets a server coalesce, and clients match parts by
    their Content-Range."""
    merged: list[ByteRange] = []
    for current in sorted(ranges, key=lambda r: r.start):
        if merged and current.start <= merged[-1].end + 1 + PART_OVERHEAD:
            last = merged[-1]
            merged[-1] = ByteRange(last.start, max(last.end, current.end))
        else:
            merged.append(current)
    return merged


@dataclass(frozen=True)
class ContentRange:
    """A Content-Range of a 206 (RFC 9110 §14.4): bytes first-last of complete_length."""

    first: int
    last: int
    complete_length: int | None  # None: "*", the length is unknown


def parse_content_range(value: str | None) -> ContentRange | None:
    """§14.4: `bytes first-last/complete-length` or `bytes first-last/*`; None for anything
    else (absent, another unit, an unsatisfied-range `*/n`, or invalid: last before first,
    or a last byte at or beyond the complete length)."""
    if value is None:
        return None
    unit, _, spec = value.strip().partition(" ")
    if unit.lower() != "bytes":
        return None
    span, slash, complete = spec.strip().partition("/")
    first, dash, last = span.partition("-")
    if not slash or not dash or not (first.isdigit() and last.isdigit()):
        return None
    if not (complete == "*" or complete.isdigit()):
        return None
    content_range = ContentRange(int(first), int(last), None if complete == "*" else int(complete))
    if content_range.last < content_range.first:
        return None
    total = content_range.complete_length
    if total is not None and content_range.last >= total:
        return None
    return content_range


def whole_representation(content_range: str | None, content_length: int | None) -> int | None:
    """The length of the representation when a 206 carries all of it, else None.

    RFC 9111 §3.4: a cache that holds the complete representation may answer with it as a
    200, and a 206 whose Content-Range is `bytes 0-(n-1)/n` holds exactly that. Its
    Content-Length, when sent, must be the same n (RFC 9110 §14.4: it counts the bytes of
    the enclosed range)."""
    parsed = parse_content_range(content_range)
    if parsed is None or parsed.complete_length is None or parsed.first != 0:
        return None
    total = parsed.complete_length
    if parsed.last != total - 1 or (content_length is not None and content_length != total):
        return None
    return total


def as_complete(
    status: int, headers: Headers, content_length: int | None
) -> CIMultiDict[str] | None:
    """The headers of the complete 200 a 206 is when its one Content-Range spans the whole
    representation (RFC 9111 §3.4), so it is stored and answers any later range; None for
    any other response. Any other 206 stays a 206, which is never stored (storable.py) nor
    served as a 200. Only with a Content-Length, which the body is checked against."""
    if status != 206 or content_length is None or len(headers.getall("Content-Range", ())) != 1:
        return None
    if whole_representation(headers.get("Content-Range"), content_length) is None:
        return None
    complete = CIMultiDict(headers)
    del complete["Content-Range"]
    return complete
