"""Targeted cache-control fields (RFC 9213): CDN-Cache-Control and our own field take
precedence over Cache-Control for this cache."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.policy.directives import Headers, parse_cache_control


def effective_headers(headers: Headers, targets: tuple[str, ...]) -> Headers:
    """The response headers as this cache's policy must read them.

    RFC 9213 §2.1: the first field of the target list with a valid, non-empty value decides
    the caching policy, and Cache-Control and Expires are then ignored; without one, they
    apply as usual. The headers a client receives are not changed by this."""
    for name in targets:
        values = headers.getall(name, ())
        if values and parse_cache_control(values).directives:
            out = CIMultiDict(
                (n, v) for n, v in headers.items() if n.lower() not in ("cache-control", "expires")
            )
            for value in values:
                out.add("Cache-Control", value)
            return out
    return headers
