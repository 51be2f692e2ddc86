"""The request target an entry is keyed by, and fetched with (RFC 9111 §2: the primary
cache key is the target URI; a cache may normalise it where that keeps its meaning).

One function, `cache_target`, is the whole rule: the handler keys and fetches with it, and
the admin purge applies it to the URL it is given, so a URL purges the entry its requests
use whatever order or tracking parameters it was written with. docs/cache-key.md is the
operator's account of it.

With the rule off (the default) the target is used as received. With it on:

- the path is never changed: imgproxy, imagor and thumbor sign the path, byte for byte;
- the query is read as `&`-separated members `name[=value]` (the form every web framework
  parses); empty members are ignored, and a query that is then empty is no query (`/a?`
  and `/a` are one entry);
- percent-escapes are written canonically in names and values (RFC 3986 §6.2.2.1: hex
  digits upper-case; §6.2.2.2: an escaped unreserved character is that character), while
  reserved characters keep whatever form they had (`%2F` and `/`, `%3D` and `=`, `%26` and
  `&`, `+` and `%20` all differ: origins read them differently);
- members whose name matches a drop pattern (fnmatch globs, case-sensitive, matched on the
  canonical name) are removed, unless the name is a signed one, which is never dropped;
- with sorting on, members are ordered by name, stably: the values of one name keep their
  order (`a=2&a=1` stays so), since many applications read repeated names as a list."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

# RFC 3986 §2.3: unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# Characters a parameter name in a setting may not hold: they would end or split it.
_NOT_IN_NAME = frozenset("&=#? \t\r\n\0")
_GLOB_CHARS = frozenset("*?[]")


@dataclass(frozen=True)
class QueryRule:
    sort: bool = False  # order members by name (values of one name keep their order)
    drop: tuple[str, ...] = ()  # glob patterns of parameter names removed
    signed: frozenset[str] = frozenset()  # names the origin checks: never removed

    @property
    def active(self) -> bool:
        return self.sort or bool(self.drop)

    def drops(self, name: str) -> bool:
        return name not in self.signed and any(fnmatchcase(name, p) for p in self.drop)


IDENTITY = QueryRule()


def cache_target(path_qs: str, rule: QueryRule) -> str:
    """The request target `path_qs` (path and query, as received) as the cache keys it and
    the origin is asked for it. Applying it twice gives the same target."""
    if not rule.active:
        return path_qs
    path, sep, query = path_qs.partition("?")
    if not sep:
        return path_qs
    members = [_canonical_escapes(m) for m in query.split("&") if m]
    kept = [m for m in members if not rule.drops(_name(m))]
    if rule.sort:
        kept.sort(key=_name)  # list.sort is stable: a name's values keep their order
    return f"{path}?{'&'.join(kept)}" if kept else path


def _name(member: str) -> str:
    return member.partition("=")[0]


def _canonical_escapes(text: str) -> str:
    """RFC 3986 §6.2.2.1 and §6.2.2.2; a `%` not followed by two hex digits is left as it is
    (it escapes nothing, and the origin decides what it means)."""

    def one(match: re.Match[str]) -> str:
        octet = int(match.group(1), 16)
        return chr(octet) if octet in _UNRESERVED else "%" + match.group(1).upper()

    return _ESCAPE.sub(one, text) if "%" in text else text


# -- settings (the messages name what is wrong; proxy/config.py names the setting) ----------


def setting_items(raw: Any) -> list[str]:
    """A list setting's items: a comma-separated string or a TOML list, empty items dropped
    (every list setting reads its value so)."""
    items = raw if isinstance(raw, list) else str(raw).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def _check_name(text: str, what: str) -> str:
    if not text.isprintable() or set(text) & _NOT_IN_NAME:
        raise ValueError(f"{what} {text!r} may not hold & = # ? or whitespace")
    return text


def query_name_patterns(raw: Any) -> tuple[str, ...]:
    """--drop-query-params: glob patterns of query parameter names, e.g. 'utm_*,fbclid'."""
    if isinstance(raw, bool):
        raise ValueError(f"must be parameter name patterns like 'utm_*,fbclid', got {raw!r}")
    return tuple(dict.fromkeys(_check_name(item, "pattern") for item in setting_items(raw)))


def query_names(raw: Any) -> frozenset[str]:
    """--signed-query-params: literal query parameter names, e.g. 'sig,expires'."""
    if isinstance(raw, bool):
        raise ValueError(f"must be parameter names like 'sig,expires', got {raw!r}")
    names = [_check_name(item, "name") for item in setting_items(raw)]
    for name in names:
        if set(name) & _GLOB_CHARS:
            raise ValueError(f"name {name!r} is a pattern; give the literal names")
    return frozenset(names)


def refused_drop(drop: tuple[str, ...], signed: frozenset[str]) -> str | None:
    """Why these drop patterns may not be used with these signed names, or None: a pattern
    that matches a signed name would make every signed URL fail at the origin."""
    for pattern in drop:
        for name in sorted(signed):
            if fnmatchcase(name, pattern):
                return (
                    f"pattern {pattern!r} matches {name!r}, which --signed-query-params "
                    "names: the origin checks it, so it is never dropped"
                )
    return None
