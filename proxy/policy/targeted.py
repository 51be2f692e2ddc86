"""Targeted cache-control fields: RFC 9213 (CDN-Cache-Control and our own field) and the
Edge Architecture's Surrogate-Control, each taking precedence over Cache-Control."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import http_sf
from multidict import CIMultiDict

from proxy.policy.directives import (
    CacheControl,
    Headers,
    _split_outside_quotes,
    parse_cache_control,
)

# The device token we announce in Surrogate-Capability (Edge Architecture 1.0 §2.2), and
# the one Surrogate-Control directives may target with a ";pixcache" suffix.
SURROGATE_TOKEN = "pixcache"
SURROGATE_CAPABILITY = f'{SURROGATE_TOKEN}="Surrogate/1.0"'

# RFC 9213 §2.1: a directive's value maps to the Structured Field type of its argument.
# delta-seconds arguments (RFC 9111 §1.2.2, RFC 5861 §3 and §4) are non-negative Integers;
_INTEGER_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})
# directives without an argument (RFC 9111 §5.2.2, RFC 8246) are Boolean true;
_BOOLEAN_DIRECTIVES = frozenset(
    {
        "must-revalidate",
        "must-understand",
        "no-store",
        "no-transform",
        "proxy-revalidate",
        "public",
        "immutable",
    }
)
# and no-cache and private are Boolean true or a String listing field names (§5.2.2.4,
# §5.2.2.7). Any other (extension) directive may take any type; the rules ignore those.
_FIELD_LIST_DIRECTIVES = frozenset({"no-cache", "private"})


def surrogate_directives(values: list[str]) -> list[str]:
    """The Surrogate-Control directives meant for us: untargeted ones, and those whose
    `;target` names our token (a targeted directive wins over an untargeted one)."""
    ours: list[str] = []
    general: list[str] = []
    for line in values:
        for item in _split_outside_quotes(line):
            directive, _, target = item.strip().partition(";")
            if not directive:
                continue
            if not target:
                general.append(directive.strip())
            elif target.strip() == SURROGATE_TOKEN:
                ours.append(directive.strip())
    return ours + general  # parse_cache_control keeps the first of each name


def targeted_directives(lines: Iterable[str]) -> CacheControl | None:
    """The directives of an RFC 9213 targeted field, or None when the field must be
    ignored: absent, empty, not a valid Dictionary, or with a member of the wrong type.

    §2.1: a targeted field is a Dictionary Structured Field (RFC 8941 §3.2) whose members
    are cache directives, their values the directives' arguments; parameters on members
    are ignored. A field that is empty or does not parse SHOULD be ignored, and a value
    that violates its directive's inferred type SHOULD NOT be consumed: we ignore the whole
    field then, so that Cache-Control decides instead of a half-read targeted field (a
    max-age of 1.5 or "60", a no-store=?0). Keys must be lower case (RFC 8941 §3.2), and
    when one occurs twice the last wins (RFC 8941 §4.2.2)."""
    kept = [line.strip() for line in lines if line.strip()]
    if not kept:
        return None
    try:
        # RFC 8941 §4.2: several field lines are combined into one value first.
        members = http_sf.parse(", ".join(kept).encode("ascii"), tltype="dictionary")
    except (UnicodeEncodeError, http_sf.StructuredFieldError):
        return None
    assert isinstance(members, dict)
    directives: dict[str, str | None] = {}
    for name, (value, _parameters) in members.items():  # §2.1: parameters are ignored
        argument = _argument(name, value)
        if isinstance(argument, _WrongType):
            return None
        directives[name] = argument
    return CacheControl(directives) if directives else None


class _WrongType:
    """A member value that violates its directive's inferred type (RFC 9213 §2.1)."""


_WRONG_TYPE = _WrongType()


def _argument(name: str, value: Any) -> str | None | _WrongType:
    """The directive argument a member value (a bare item, or an Inner List) stands for:
    None for Boolean true (no argument), the text of an Integer or a String, or
    _WRONG_TYPE."""
    if name in _INTEGER_DIRECTIVES:
        if type(value) is int and value >= 0:  # bool is an int: `max-age=?1` is no Integer
            return str(value)
        return _WRONG_TYPE
    if name in _BOOLEAN_DIRECTIVES:
        return None if value is True else _WRONG_TYPE
    if name in _FIELD_LIST_DIRECTIVES:
        if value is True:
            return None
        if type(value) is str:  # a String; §2.1 maps a list of field names to nothing else
            return value
        return _WRONG_TYPE
    # An extension directive: no rule reads its argument, kept as text all the same.
    if value is True:
        return None
    if type(value) is str:
        return value
    return http_sf.ser({name: (value, {})}).partition("=")[2]


def _cache_control_line(directives: CacheControl) -> str:
    """The directives as one Cache-Control field value that parse_cache_control reads back
    to the same set (RFC 9111 §5.2: token or quoted-string arguments)."""
    parts = []
    for name, argument in directives.directives.items():
        if argument is None:
            parts.append(name)
        elif argument and all(c.isascii() and (c.isalnum() or c in _TCHAR) for c in argument):
            parts.append(f"{name}={argument}")
        else:
            escaped = argument.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{name}="{escaped}"')
    return ", ".join(parts)


_TCHAR = frozenset("!#$%&'*+-.^_`|~")  # RFC 9110 §5.6.2, besides DIGIT and ALPHA


def effective_headers(headers: Headers, targets: tuple[str, ...]) -> Headers:
    """The response headers as this cache's policy must read them.

    RFC 9213 §2.2: the first field of the target list with a valid, non-empty value decides
    the caching policy, and Cache-Control and Expires are then ignored; without one, they
    apply as usual. Surrogate-Control comes last in our list; it is no Structured Field
    and keeps its own Edge Architecture parsing. The headers a client receives are not
    changed by this."""
    for name in targets:
        values = headers.getall(name, ())
        if not values:
            continue
        if name.lower() == "surrogate-control":
            ours = surrogate_directives(list(values))
            directives = parse_cache_control(ours)
            lines = ours if directives.directives else []
        else:
            found = targeted_directives(values)
            lines = [_cache_control_line(found)] if found is not None else []
        if lines:
            out = CIMultiDict(
                (n, v) for n, v in headers.items() if n.lower() not in ("cache-control", "expires")
            )
            for line in lines:
                out.add("Cache-Control", line)
            return out
    return headers
