"""Writing responses to the client: stored entries, growing fills, and origin streams.

Every way a body can fail after the headers went out ends in `abort`, which closes the
connection early so the client sees an incomplete response, never a complete-looking one."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import aclosing

import structlog
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import ProxyError
from proxy.fill import Fill
from proxy.fill_body import FileSpan
from proxy.policy.cache_status import cache_status_field
from proxy.policy.conditional import if_range_allows, not_modified, not_modified_headers
from proxy.policy.directives import Headers
from proxy.policy.hop_by_hop import end_to_end, with_via
from proxy.policy.ranges import ByteRange, Unsatisfiable, parse_range
from proxy.sendfile import send_range

log = structlog.get_logger("pixcache.respond")

VIA = "pixcache"
# Framing is ours to set per hop; Date/Server must not be replaced by aiohttp's.
# Surrogate-Control is for caches like us and is consumed here (Edge Architecture 1.0).
DROP_FROM_STORED = frozenset({"content-length", "surrogate-control"})
# Read size when a body cannot go by sendfile.
COPY_CHUNK = 256 * 1024


# Where `start` leaves the prepared response, for the handler to hand back to aiohttp.
RESPONSE_KEY = web.RequestKey("pixcache.response", web.StreamResponse)


class ClientGone(Exception):
    """The client closed its connection; nothing more can be sent."""


def client_headers(
    headers: Headers, cache_status: str, *, age: int | None = None
) -> CIMultiDict[str]:
    """The end-to-end response headers a client receives, with our own fields added.
    `cache_status` is our Cache-Status member; it is appended to upstream's (RFC 9211 §2)."""
    out = end_to_end(headers, drop=DROP_FROM_STORED)
    if age is not None:
        out.popall("Age", None)
        out["Age"] = str(age)
    with_via(out, "1.1", VIA)
    out["Cache-Status"] = cache_status_field(out.getall("Cache-Status", ()), cache_status)
    return out


def abort(request: web.BaseRequest) -> None:
    """Cut the connection so the client can tell the body is incomplete (RFC 9112 §6.3:
    a message shorter than its Content-Length, or a chunked one without its last chunk)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def start(
    request: web.BaseRequest, status: int, headers: CIMultiDict[str], length: int | None
) -> web.StreamResponse:
    response = web.StreamResponse(status=status, headers=headers)
    if length is not None and request.method != "HEAD":
        response.content_length = length
    elif length is not None:
        # HEAD: announce the GET body's length without sending one (RFC 9110 §9.3.2).
        response.headers["Content-Length"] = str(length)
    request[RESPONSE_KEY] = response
    try:
        await response.prepare(request)
    except ConnectionError as exc:
        raise ClientGone() from exc
    return response


def _transport(request: web.BaseRequest) -> asyncio.Transport:
    if request.transport is None or request.transport.is_closing():
        raise ClientGone()
    return request.transport


async def send_stored(
    request: web.BaseRequest,
    response: web.StreamResponse,
    body: int | bytes,
    offset: int,
    length: int,
) -> None:
    """Bytes of a stored body: from the bytes a hit checked, or by sendfile from its file."""
    if request.method == "HEAD":
        return
    try:
        await _send_body(request, response, body, offset, length)
        await response.write_eof()
    except (ConnectionError, EOFError) as exc:
        abort(request)
        raise ClientGone() from exc


async def send_growing(
    request: web.BaseRequest,
    response: web.StreamResponse,
    fill: Fill,
    reader: int,
    first: int = 0,
    count: int | None = None,
) -> None:
    """Bytes [first, first + count) of a fill's body (all of it when count is None), as
    they arrive: from its temp file as it grows, then from its in-memory tail if the fill
    had to stop storing."""
    if request.method == "HEAD":
        return
    pos = first
    end = None if count is None else first + count
    try:
        async with aclosing(fill.body.read(reader, first, end)) as pieces:
            async for piece in pieces:
                if isinstance(piece, FileSpan):
                    await _copy(request, response, piece.fd, piece.offset, piece.count)
                    pos += piece.count
                else:
                    await response.write(piece)
                    pos += len(piece)
        declared = response.content_length
        if (end is not None and pos < end) or (declared is not None and pos < declared):
            # Fewer bytes than promised can only be sent as a cut connection.
            log.error("body_short_of_length", sent=pos, declared=declared)
            abort(request)
            raise ClientGone()
        await response.write_eof()
    except ProxyError:
        abort(request)
        raise
    except (ConnectionError, EOFError) as exc:
        abort(request)
        raise ClientGone() from exc


async def send_entry(
    request: web.BaseRequest, status: int, headers: CIMultiDict[str], fd: int | bytes, length: int
) -> int:
    """A stored response: 304 to a matching conditional request (RFC 9110 §13.1), 206 or
    multipart/byteranges or 416 to a Range (§14), else all of it. Returns the status sent.
    `fd` is the body file, or the body's bytes once a hit read and checked them."""
    if status == 200 and not_modified(request.headers, headers):
        return await _send_not_modified(request, headers)
    if status == 200:
        headers.setdefault("Accept-Ranges", "bytes")
    try:
        ranges = _requested_ranges(request, status, headers, length)
    except Unsatisfiable:
        return await _send_unsatisfiable(request, headers, length)
    if ranges is None:
        response = await start(request, status, headers, length)
        await send_stored(request, response, fd, 0, length)
        return status
    if len(ranges) == 1:
        headers["Content-Range"] = ranges[0].content_range(length)
        response = await start(request, 206, headers, ranges[0].length)
        await send_stored(request, response, fd, ranges[0].start, ranges[0].length)
        return 206
    await _send_multipart(request, headers, fd, length, ranges)
    return 206


async def send_filling(
    request: web.BaseRequest,
    status: int,
    headers: CIMultiDict[str],
    length: int | None,
    fill: Fill,
    reader: int,
) -> int:
    """A response whose body is still arriving. A single Range is answered as soon as its
    bytes are in (§14: a multi-range request gets the whole body, which the RFC allows)."""
    if status == 200 and not_modified(request.headers, headers):
        return await _send_not_modified(request, headers)
    ranges = None
    if length is not None:
        try:
            ranges = _requested_ranges(request, status, headers, length)
        except Unsatisfiable:
            return await _send_unsatisfiable(request, headers, length)
    if ranges is not None and len(ranges) == 1:
        headers["Content-Range"] = ranges[0].content_range(length or 0)
        response = await start(request, 206, headers, ranges[0].length)
        await send_growing(request, response, fill, reader, ranges[0].start, ranges[0].length)
        return 206
    response = await start(request, status, headers, length)
    await send_growing(request, response, fill, reader)
    return status


def _requested_ranges(
    request: web.BaseRequest, status: int, headers: CIMultiDict[str], length: int
) -> list[ByteRange] | None:
    """RFC 9110 §14.2: Range applies to GET of a 200, and only if If-Range still matches."""
    if status != 200 or request.method != "GET" or "range" not in request.headers:
        return None
    if not if_range_allows(request.headers, headers):
        return None
    return parse_range(request.headers.get("Range"), length)


async def _send_not_modified(request: web.BaseRequest, headers: CIMultiDict[str]) -> int:
    out = not_modified_headers(headers)
    for name in ("Via", "Cache-Status"):
        for value in headers.getall(name, ()):
            out.add(name, value)
    response = await start(request, 304, out, None)
    await finish(request, response)
    return 304


async def _send_unsatisfiable(
    request: web.BaseRequest, headers: CIMultiDict[str], length: int
) -> int:
    """§15.5.17: 416 with the current length in Content-Range."""
    out = CIMultiDict((n, v) for n, v in headers.items() if n.lower() in _KEPT_ON_416)
    out["Content-Range"] = f"bytes */{length}"
    response = await start(request, 416, out, 0)
    await finish(request, response)
    return 416


_KEPT_ON_416 = frozenset({"date", "etag", "last-modified", "cache-control", "via", "cache-status"})


async def _send_multipart(
    request: web.BaseRequest,
    headers: CIMultiDict[str],
    fd: int | bytes,
    length: int,
    ranges: list[ByteRange],
) -> None:
    """§14.6: multipart/byteranges, each part with its Content-Type and Content-Range."""
    boundary = secrets.token_hex(16)
    part_type = headers.get("Content-Type")
    heads = [
        (
            f"\r\n--{boundary}\r\n"
            + (f"Content-Type: {part_type}\r\n" if part_type else "")
            + f"Content-Range: {r.content_range(length)}\r\n\r\n"
        ).encode()
        for r in ranges
    ]
    closing = f"\r\n--{boundary}--\r\n".encode()
    total = sum(len(h) + r.length for h, r in zip(heads, ranges, strict=True)) + len(closing)
    headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    response = await start(request, 206, headers, total)
    if request.method == "HEAD":
        return
    try:
        for head, byte_range in zip(heads, ranges, strict=True):
            await response.write(head)
            await _send_body(request, response, fd, byte_range.start, byte_range.length)
        await response.write(closing)
        await response.write_eof()
    except (ConnectionError, EOFError) as exc:
        abort(request)
        raise ClientGone() from exc


async def _send_body(
    request: web.BaseRequest,
    response: web.StreamResponse,
    body: int | bytes,
    offset: int,
    count: int,
) -> None:
    """Bytes [offset, offset + count) of a stored body: of the checked bytes themselves
    (never re-read from the file), or of the body file by sendfile."""
    if isinstance(body, bytes):
        await response.write(memoryview(body)[offset : offset + count])
    else:
        await send_range(_transport(request), body, offset, count)


async def finish(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """End a response whose body (if any) was written."""
    try:
        await response.write_eof()
    except ConnectionError as exc:
        raise ClientGone() from exc


async def _copy(
    request: web.BaseRequest, response: web.StreamResponse, fd: int, offset: int, count: int
) -> None:
    """Bytes of `fd` to the client: by sendfile when the length was declared; through
    aiohttp's writer otherwise, which frames them as chunks (or a close-delimited body)."""
    if response.content_length is not None:
        await send_range(_transport(request), fd, offset, count)
        return
    loop = asyncio.get_running_loop()
    end = offset + count
    while offset < end:
        data = await loop.run_in_executor(None, os.pread, fd, min(end - offset, COPY_CHUNK), offset)
        if not data:
            raise EOFError("temp file shorter than written")
        await response.write(data)
        offset += len(data)


async def send_stream(
    request: web.BaseRequest, response: web.StreamResponse, body: AsyncIterator[bytes]
) -> None:
    """The body of a response relayed straight from the origin (not shared, not stored)."""
    try:
        if request.method != "HEAD":
            async for chunk in body:
                await response.write(chunk)
        await response.write_eof()
    except ProxyError:
        abort(request)
        raise
    except ConnectionError as exc:
        abort(request)
        raise ClientGone() from exc
