"""The Cache-Status response field (RFC 9211).

Cache-Status is a List (RFC 8941 §3.1) with one member per cache the response went
through, in the order the caches handled it: the origin's side first, the cache closest to
the client last (RFC 9211 §2). pixcache appends its own member to what upstream sent."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import http_sf
from http_sf.types import BareItemType

CACHE_NAME = "pixcache"
# RFC 8941 §3.3.1: an Integer has at most 15 digits.
_SF_INTEGER_MAX = 999_999_999_999_999


@dataclass(frozen=True)
class CacheStatus:
    """One cache's entry in Cache-Status; fields are left out when they do not apply."""

    hit: bool = False
    # RFC 9211 §2.2: bypass, method, uri-miss, vary-miss, miss, request, stale
    fwd: str | None = None
    fwd_status: int | None = None  # §2.3
    ttl: float | None = None  # §2.4
    stored: bool = False  # §2.5
    collapsed: bool = False  # §2.6
    detail: str | None = None  # §2.8

    def render(self) -> str:
        """Our List member: the cache's name (a Token) and its parameters (RFC 9211 §2),
        each value serialised as a Structured Field bare item. Parameters are written
        `; name=value`, which RFC 8941 §4.2.3.2 parses like `;name=value`."""
        params: list[tuple[str, BareItemType]] = []
        if self.hit:
            params.append(("hit", True))
        if self.fwd:
            params.append(("fwd", http_sf.Token(self.fwd)))  # §2.2: a Token
        if self.fwd_status is not None:
            params.append(("fwd-status", self.fwd_status))  # §2.3: an Integer
        if self.ttl is not None:
            # §2.4: ttl is an Integer; it is negative when the response is stale.
            ttl = max(-_SF_INTEGER_MAX, min(_SF_INTEGER_MAX, int(self.ttl)))
            params.append(("ttl", ttl))
        if self.stored:
            params.append(("stored", True))
        if self.collapsed:
            params.append(("collapsed", True))
        if self.detail:
            params.append(("detail", _printable(self.detail)))  # §2.8: a String here
        parts = [CACHE_NAME]
        for name, value in params:
            parts.append(name if value is True else f"{name}={http_sf.ser(value)}")
        return "; ".join(parts)

    @property
    def outcome(self) -> str:
        """A single word for logs and metrics."""
        if self.hit:
            return "hit"
        return self.fwd or "miss"


def _printable(text: str) -> str:
    """RFC 8941 §3.3.3: a String holds printable ASCII only; anything else becomes `?`."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def upstream_cache_status(lines: Iterable[str]) -> str | None:
    """The Cache-Status that caches before us sent, as one field value, or None when
    there is none to keep.

    RFC 8941 §4.2: the field lines are combined into one value and parsed as a List; when
    parsing fails, the whole field is ignored (we do not try to salvage members, which
    could attribute one cache's parameters to another). The members are kept as upstream
    wrote them, so a client reads each cache's entry unchanged."""
    kept = [line.strip() for line in lines if line.strip()]
    if not kept:
        return None
    value = ", ".join(kept)
    try:
        members = http_sf.parse(value.encode("ascii"), tltype="list")
    except (UnicodeEncodeError, http_sf.StructuredFieldError):
        return None
    return value if members else None


def appended(upstream: str | None, ours: str) -> str:
    """RFC 9211 §2: our member goes last, after those of the caches before us."""
    return f"{upstream}, {ours}" if upstream else ours


def cache_status_field(lines: Iterable[str], ours: str) -> str:
    """The Cache-Status a client receives: upstream's valid List, then our member."""
    return appended(upstream_cache_status(lines), ours)
