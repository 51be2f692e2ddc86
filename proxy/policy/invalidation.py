"""Which stored responses an unsafe request invalidates (RFC 9111 §4.4)."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from proxy.policy.directives import Headers


def invalidated_targets(path_qs: str, host: str, response_headers: Headers) -> list[str]:
    """RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target URI,
    and the URIs in Location and Content-Location when they have the same origin (a
    different host must not be able to make us drop entries for it). Returns the request
    targets (path and query) to invalidate."""
    base = f"http://{host}{path_qs}"
    targets = [path_qs]
    for name in ("Location", "Content-Location"):
        for value in response_headers.getall(name, ()):
            resolved = urlsplit(urljoin(base, value.strip()))
            if resolved.netloc.lower() != host.lower():
                continue
            target = (resolved.path or "/") + (f"?{resolved.query}" if resolved.query else "")
            if target not in targets:
                targets.append(target)
    return targets
