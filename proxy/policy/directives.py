"""Parsing of Cache-Control directives, delta-seconds and HTTP dates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from multidict import CIMultiDictProxy, MultiMapping

Headers = MultiMapping[str] | CIMultiDictProxy[str]

# RFC 9111 §1.2.2: a delta-seconds larger than the greatest integer a cache can represent
# is sent as 2147483648 (2^31); a recipient treats any larger value the same way.
DELTA_SECONDS_MAX = 2**31


@dataclass(frozen=True)
class CacheControl:
    """The directives of one Cache-Control field, names lower-cased, first occurrence kept."""

    directives: dict[str, str | None]

    def __contains__(self, name: str) -> bool:
        return name in self.directives

    def seconds(self, name: str) -> int | None:
        """The delta-seconds value of `name`, or None when absent or invalid (RFC 9111 §1.2.2)."""
        if name not in self.directives:
            return None
        return parse_delta_seconds(self.directives[name])


def parse_delta_seconds(value: str | None) -> int | None:
    """RFC 9111 §1.2.2: delta-seconds = 1*DIGIT. A quoted or signed value is invalid."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return min(int(value), DELTA_SECONDS_MAX)


def _split_outside_quotes(text: str) -> Iterable[str]:
    """Split on commas that are not inside a quoted-string (RFC 9110 §5.6.4)."""
    part: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            yield "".join(part)
            part = []
            continue
        part.append(char)
    yield "".join(part)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def parse_cache_control(values: Iterable[str]) -> CacheControl:
    """Parse every Cache-Control field line into one set of directives.

    RFC 9111 §5.2: directive names are case-insensitive; arguments may be a token or a
    quoted-string. RFC 9111 §4.2.1: when a directive appears more than once, we use the
    first occurrence. Unknown directives are kept (and ignored by the rules)."""
    directives: dict[str, str | None] = {}
    for line in values:
        for item in _split_outside_quotes(line):
            name, sep, arg = item.strip().partition("=")
            name = name.strip().lower()
            if not name or name in directives:
                continue
            directives[name] = _unquote(arg.strip()) if sep else None
    return CacheControl(directives)


def cache_control_of(headers: Headers) -> CacheControl:
    return parse_cache_control(headers.getall("Cache-Control", ()))


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7) as a POSIX timestamp, or None when invalid."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        # RFC 9110 §5.6.7: HTTP-date is always GMT. Only the asctime form (no comma) carries
        # no zone, and a recipient MUST accept it; other zone-less dates are invalid.
        if "," in value:
            return None
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def single_date(headers: Headers, name: str) -> float | None:
    """The value of a date field that must occur once; several lines make it invalid."""
    values = headers.getall(name, ())
    if len(values) != 1:
        return None
    return parse_http_date(values[0])


def list_values(headers: Headers, name: str) -> list[str]:
    """Members of a comma-separated list field (RFC 9110 §5.6.1), empty members dropped."""
    return [
        member.strip()
        for line in headers.getall(name, ())
        for member in _split_outside_quotes(line)
        if member.strip()
    ]
