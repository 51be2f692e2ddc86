"""Targeted cache-control fields: RFC 9213 (CDN-Cache-Control and our own field) and the
Edge Architecture's Surrogate-Control, each taking precedence over Cache-Control."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.policy.directives import Headers, _split_outside_quotes, parse_cache_control

# The device token we announce in Surrogate-Capability (Edge Architecture 1.0 §2.2), and
# the one Surrogate-Control directives may target with a ";pixcache" suffix.
SURROGATE_TOKEN = "pixcache"
SURROGATE_CAPABILITY = f'{SURROGATE_TOKEN}="Surrogate/1.0"'


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


def effective_headers(headers: Headers, targets: tuple[str, ...]) -> Headers:
    """The response headers as this cache's policy must read them.

    RFC 9213 §2.1: the first field of the target list with a valid, non-empty value decides
    the caching policy, and Cache-Control and Expires are then ignored; without one, they
    apply as usual. Surrogate-Control comes last in our list. The headers a client
    receives are not changed by this."""
    for name in targets:
        values = headers.getall(name, ())
        if name.lower() == "surrogate-control":
            values = surrogate_directives(list(values))
        if values and parse_cache_control(values).directives:
            out = CIMultiDict(
                (n, v) for n, v in headers.items() if n.lower() not in ("cache-control", "expires")
            )
            for value in values:
                out.add("Cache-Control", value)
            return out
    return headers
