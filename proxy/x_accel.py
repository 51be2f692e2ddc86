"""X-Accel-Redirect: nginx in front (nginx/pixcache-x-accel.conf) sends a hit's body file
itself, with sendfile; pixcache answers only the headers.

nginx marks the requests it can do this for with `X-Sendfile-Type: X-Accel-Redirect`. On a
redirect nginx keeps few of the answer's fields, and adds back those the config names with
`add_header Name $upstream_http_name`; pixcache redirects only responses whose every field
reaches the client that way, and answers the rest itself.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from proxy.respond import finish, start

INVITATION = ("X-Sendfile-Type", "x-accel-redirect")
# Requests nginx would judge by the body file's own size and mtime (it answers 412 and 304
# for files by itself): pixcache answers them against the stored validators (RFC 9110 §13,
# §14).
ANSWERED_HERE = (
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
)
# The one field sent under its own name that nginx keeps from the redirect answer. Should
# nginx ask again (the body file was gone), the second answer's Content-Type replaces it.
NGINX_KEEPS = frozenset({"content-type"})
# Fields the config restores from $upstream_http_*.
NGINX_RESTORES = frozenset(
    {
        "etag",
        "last-modified",
        "vary",
        "age",
        "cache-status",
        "via",
        "content-encoding",
        "content-language",
        "content-location",
        "link",
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
        "timing-allow-origin",
        "cross-origin-resource-policy",
        "x-content-type-options",
        "content-security-policy",
        "surrogate-key",
        "cache-control",
        "expires",
        "content-disposition",
        "accept-ranges",
    }
)
# Of those, the ones nginx would keep under their own names, and could not drop again if it
# asked pixcache once more: a fresh answer (a 502, another entry) would go out with the old
# entry's Cache-Control. They travel under STORED_PREFIX, which nginx does not keep.
RENAMED = frozenset({"cache-control", "expires", "content-disposition", "accept-ranges"})
STORED_PREFIX = "X-Pixcache-Stored-"
# Fields nginx sets itself. (Set-Cookie is not here: nginx would keep it, and resend it with
# a second answer. A response with Set-Cookie is sent by pixcache.)
NGINX_SETS = frozenset({"content-length", "date", "server"})
NGINX_DELIVERS = NGINX_KEEPS | NGINX_RESTORES | NGINX_SETS


def nginx_may_send(request: web.BaseRequest, status: int, headers: CIMultiDict[str]) -> bool:
    """Whether nginx asked to send this stored response's body itself, and may: a whole 200
    to a GET that is neither a Range nor a conditional request, whose every field nginx
    delivers."""
    field, value = INVITATION
    return (
        request.headers.get(field, "").strip().lower() == value
        and request.method == "GET"
        and status == 200
        and not any(name in request.headers for name in ANSWERED_HERE)
        and all(name.lower() in NGINX_DELIVERS for name in headers)
    )


def redirect_headers(headers: CIMultiDict[str], uri: str) -> CIMultiDict[str]:
    """The answer that makes nginx send the body file at `uri` with these fields."""
    out: CIMultiDict[str] = CIMultiDict()
    for name in dict.fromkeys(headers):  # each name once, in order
        # nginx restores a field from $upstream_http_*, which holds one line: combining the
        # lines of a list field keeps its meaning (RFC 9110 §5.3).
        value = ", ".join(headers.getall(name))
        out[STORED_PREFIX + name if name.lower() in RENAMED else name] = value
    out.setdefault(STORED_PREFIX + "Accept-Ranges", "bytes")  # pixcache answers ranges
    out["X-Accel-Redirect"] = uri
    return out


async def send_by_nginx(request: web.BaseRequest, headers: CIMultiDict[str], uri: str) -> int:
    """An empty 200 naming the body file: nginx sends it, with sendfile."""
    response = await start(request, 200, redirect_headers(headers, uri), 0)
    await finish(request, response)
    return 200
