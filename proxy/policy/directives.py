"""Parsing of Cache-Control directives, delta-seconds and HTTP dates."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime

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


# RFC 9110 §5.6.7: the three forms of HTTP-date. Every separator is exactly one SP
# (asctime pads a one-digit day with a second SP instead of a zero); only ASCII digits
# count. The ABNF's %s strings make day names, month names and "GMT" case-sensitive, but
# §5.6.7 also encourages recipients "to be robust in parsing timestamps": a date that is
# right in every way but the case of its letters is read, not taken for expired.
_DAY = "(Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAY_LONG = "(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT; date1 = day SP month SP year
_IMF_FIXDATE = re.compile(f"{_DAY}, ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT", re.IGNORECASE)
# rfc850-date = day-name-l "," SP date2 SP time-of-day SP GMT; date2 = day "-" month "-" 2DIGIT
_RFC850_DATE = re.compile(
    f"{_DAY_LONG}, ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT", re.IGNORECASE
)
# asctime-date = day-name SP date3 SP time-of-day SP year; date3 = month SP (2DIGIT / SP DIGIT)
_ASCTIME_DATE = re.compile(
    f"{_DAY} {_MONTH} ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})", re.IGNORECASE
)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_http_date(value: str | None, *, now: float | None = None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7) as a POSIX timestamp, or None when it is not one.

    A recipient MUST accept all three forms: IMF-fixdate, the obsolete RFC 850 form and
    asctime; anything else is invalid, including near misses that lenient parsers take
    (two-digit years outside RFC 850, other zones, missing comma,
    extra spaces, a day name of the wrong form). The grammar does not tie the day name
    to the date, so a weekday that does not match is accepted: the date says when.
    `now` (default: the clock) places an RFC 850 two-digit year (see `_rfc850_year`)."""
    if not value:
        return None
    text = value.strip(" \t")  # RFC 9110 §5.5: OWS around a field value is not part of it
    if match := _IMF_FIXDATE.fullmatch(text):
        _, day, month, year, hour, minute, second = match.groups()
        return _timestamp(int(year), month, day, hour, minute, second)
    if match := _ASCTIME_DATE.fullmatch(text):
        _, month, day, hour, minute, second, year = match.groups()
        return _timestamp(int(year), month, day, hour, minute, second)
    if match := _RFC850_DATE.fullmatch(text):
        _, day, month, yy, hour, minute, second = match.groups()
        clock = (int(hour), int(minute), int(second))
        year = _rfc850_year(int(yy), _MONTHS.index(month.capitalize()) + 1, int(day), clock, now)
        if year is None:
            return None
        return _timestamp(year, month, day, hour, minute, second)
    return None


def _timestamp(
    year: int, month: str, day: str, hour: str, minute: str, second: str
) -> float | None:
    """The POSIX time of a date already matched by one of the forms; None when a field is
    out of range (time-of-day is 00:00:00 - 23:59:60, the 60 being a leap second)."""
    h, m, s = int(hour), int(minute), int(second)
    if h > 23 or m > 59 or s > 60 or (s == 60 and (h, m) != (23, 59)):
        return None
    try:
        date = datetime(year, _MONTHS.index(month.capitalize()) + 1, int(day), tzinfo=UTC)
    except ValueError:  # year 0, or a day the month does not have
        return None
    return date.timestamp() + h * 3600 + m * 60 + s


def _rfc850_year(
    yy: int, month: int, day: int, clock: tuple[int, int, int], now: float | None
) -> int | None:
    """RFC 9110 §5.6.7: a two-digit year that "appears to be more than 50 years in the
    future" is "the most recent year in the past that had the same last two digits": the
    latest year ending in `yy` whose date is no more than 50 years after `now`."""
    try:
        current = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    except (OverflowError, OSError, ValueError):  # a clock beyond what dates can say
        return None
    if current.year + 50 > MAXYEAR:
        return None
    leap_day = (current.month, current.day) == (2, 29)  # fifty years on there may be none
    limit = current.replace(year=current.year + 50, day=28 if leap_day else current.day)
    year = limit.year - (limit.year - yy) % 100
    if (year, month, day, *clock) > tuple(limit.timetuple()[:6]):
        year -= 100
    return year if year >= 1 else None


def single_date(headers: Headers, name: str, *, now: float | None = None) -> float | None:
    """The value of a date field that must occur once; several lines make it invalid."""
    values = headers.getall(name, ())
    if len(values) != 1:
        return None
    return parse_http_date(values[0], now=now)


def list_values(headers: Headers, name: str) -> list[str]:
    """Members of a comma-separated list field (RFC 9110 §5.6.1), empty members dropped."""
    return [
        member.strip()
        for line in headers.getall(name, ())
        for member in _split_outside_quotes(line)
        if member.strip()
    ]
