"""Header fields that belong to one connection and must not be forwarded (RFC 9110 §7.6)."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.policy.directives import Headers, list_values

# RFC 9110 §7.6.1 and the fields it lists as connection-specific; Proxy-* fields belong to a
# hop with a forward proxy, never to the origin. Content-Length is recomputed per hop because
# the framing may change (we may send a stored body or a chunked one).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)


# RFC 9112 §6: the fields that frame a request's content on one connection. pixcache frames
# what it forwards itself (a GET or HEAD goes without content; another method's content
# goes with the length aiohttp's parser counted), so a client's own never travel on: a
# Content-Length naming a body that is not sent would make the origin read the next
# client's request on the pooled connection as this one's body (request smuggling).
# Expect belongs to the client's hop too: pixcache does not wait for a 100 (Continue).
REQUEST_FRAMING = frozenset({"content-length", "transfer-encoding", "expect", "te", "trailer"})


# Fields by which nginx and the server behind it steer each other on one hop: X-Accel-* in a
# response makes nginx send a file or change its buffering, X-Sendfile-Type in a request
# invites the server to do so. An origin's must never reach the nginx in front of pixcache
# (it could make nginx serve any internal location), nor ours the origin.
NGINX_CONTROL_PREFIXES = ("x-accel-", "x-sendfile-")


def end_to_end(headers: Headers, *, drop: frozenset[str] = frozenset()) -> CIMultiDict[str]:
    """A copy without hop-by-hop fields, nor those named by Connection (§7.6.1), nor `drop`."""
    named = {name.lower() for name in list_values(headers, "Connection")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named or lower in drop or lower.startswith("proxy-"):
            continue
        if lower.startswith(NGINX_CONTROL_PREFIXES):
            continue
        out.add(name, value)
    return out


def with_via(headers: CIMultiDict[str], protocol_version: str, pseudonym: str) -> None:
    """RFC 9110 §7.6.3: a proxy appends its own entry to Via."""
    headers.add("Via", f"{protocol_version} {pseudonym}")
