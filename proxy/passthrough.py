"""What goes to the client straight from the origin or from pixcache itself: a relayed
origin response (nothing stored), an error response, and the request fields forwarded."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from multidict import CIMultiDict

from proxy.content_coding import readable_codings
from proxy.errors import InternalError, Overloaded, ProxyError
from proxy.observe import Served, request_id
from proxy.origins.base import OriginResponse
from proxy.policy.cache_status import CacheStatus
from proxy.policy.hop_by_hop import REQUEST_FRAMING, end_to_end, with_via
from proxy.policy.targeted import SURROGATE_CAPABILITY
from proxy.respond import RESPONSE_KEY, VIA, ClientGone, abort, client_headers, send_stream, start


async def relay_response(
    request: web.Request, origin_response: OriginResponse, cache: CacheStatus
) -> Served:
    cache = CacheStatus(
        fwd=cache.fwd or "bypass",
        fwd_status=cache.fwd_status or origin_response.status,
        detail=cache.detail,
    )
    served = Served(origin_response.status, cache, origin_response.timings)
    try:
        headers = client_headers(origin_response.headers, cache.render())
        response = await start(
            request, origin_response.status, headers, origin_response.content_length
        )
        await send_stream(request, response, origin_response.body)
    except ProxyError as exc:
        served.error = exc
    finally:
        await origin_response.close()
    return served


async def send_error(request: web.Request, exc: ProxyError, cache: CacheStatus) -> Served:
    detail = f"{exc.event}" + (f" stage={exc.stage}" if exc.stage else "")
    cache = CacheStatus(fwd=cache.fwd, collapsed=cache.collapsed, detail=detail)
    headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "text/plain; charset=utf-8"})
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after)
    with_via(headers, "1.1", VIA)
    headers["Cache-Status"] = cache.render()
    rid = headers["X-Request-Id"] = request_id(request)
    body = error_body(exc, rid)
    response = await start(request, exc.status, headers, len(body))
    if request.method != "HEAD":
        await response.write(body)
    await response.write_eof()
    return Served(exc.status, cache, error=exc)


async def send_internal_error(request: web.Request, exc: Exception) -> Served:
    error = InternalError(f"internal error: {type(exc).__name__}")
    response = request.get(RESPONSE_KEY)
    if response is not None and response.prepared:
        abort(request)  # the headers are out: cut the body so it cannot look complete
        return Served(500, CacheStatus(detail="internal"), error=error)
    try:
        return await send_error(request, error, CacheStatus())
    except (ClientGone, ConnectionError):
        return Served(499, CacheStatus(detail="internal"), error=error)


def error_body(exc: ProxyError, rid: str) -> bytes:
    """What a client reads of an error: the status, what failed and at which stage, and the
    id of the log line that has the details. Only pixcache's own words: `message` is
    composed from what pixcache knows; library text (`detail`) never reaches a client, as it
    can name internal addresses or carry another request's header values (invariant 7)."""
    phrase = HTTPStatus(exc.status).phrase if exc.status in _STATUSES else "Error"
    lines = [f"{exc.status} {phrase}: {exc.message}"]
    if exc.stage:
        lines.append(f"stage: {exc.stage}")
    lines.append(f"request id: {rid}")
    return ("\n".join(lines) + "\n").encode()


_STATUSES = frozenset(s.value for s in HTTPStatus)


def forwarded_headers(
    request: web.Request,
    *,
    drop: frozenset[str] = frozenset(),
    readable_codings_only: bool = False,
) -> CIMultiDict[str]:
    """RFC 9110 §7.6: strip hop-by-hop fields and add Via. Host names the origin, which the
    client library sets from the configured URL. Surrogate-Capability tells the origin
    that Surrogate-Control directives may target us (Edge Architecture 1.0). With
    `readable_codings_only` (the image guard on), Accept-Encoding names only the codings
    the guard reads through."""
    headers = end_to_end(request.headers, drop=drop | REQUEST_FRAMING | {"host"})
    if readable_codings_only:
        asked = ",".join(headers.popall("Accept-Encoding", ()))
        headers["Accept-Encoding"] = readable_codings(asked)
    with_via(headers, f"{request.version.major}.{request.version.minor}", VIA)
    headers.add("Surrogate-Capability", SURROGATE_CAPABILITY)
    return headers
