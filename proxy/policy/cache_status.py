"""The Cache-Status response field (RFC 9211)."""

from __future__ import annotations

from dataclasses import dataclass

CACHE_NAME = "pixcache"


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
        params = [CACHE_NAME]
        if self.hit:
            params.append("hit")
        if self.fwd:
            params.append(f"fwd={self.fwd}")
        if self.fwd_status is not None:
            params.append(f"fwd-status={self.fwd_status}")
        if self.ttl is not None:
            # §2.4: ttl is an Integer; it is negative when the response is stale.
            params.append(f"ttl={int(self.ttl)}")
        if self.stored:
            params.append("stored")
        if self.collapsed:
            params.append("collapsed")
        if self.detail:
            params.append(f'detail="{_sf_string(self.detail)}"')
        return "; ".join(params)

    @property
    def outcome(self) -> str:
        """A single word for logs and metrics."""
        if self.hit:
            return "hit"
        return self.fwd or "miss"


def _sf_string(text: str) -> str:
    """A Structured Field String (RFC 8941 §3.3.3): printable ASCII, `\\` and `"` escaped."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in text)
    return printable.replace("\\", "\\\\").replace('"', '\\"')
