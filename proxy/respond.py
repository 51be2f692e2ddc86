"""Writing responses to the client: stored entries, growing fills, and origin streams.

Every way a body can fail after the headers went out ends in `abort`, which closes the
connection early so the client sees an incomplete response, never a complete-looking one."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import ProxyError
from proxy.fill import Fill
from proxy.policy.directives import Headers
from proxy.policy.hop_by_hop import end_to_end, with_via
from proxy.sendfile import send_range

VIA = "pixcache"
# Framing is ours to set per hop; Date/Server must not be replaced by aiohttp's.
DROP_FROM_STORED = frozenset({"content-length"})
# Read size when a body cannot go by sendfile.
COPY_CHUNK = 256 * 1024


# Where `start` leaves the prepared response, for the handler to hand back to aiohttp.
RESPONSE_KEY = web.RequestKey("pixcache.response", web.StreamResponse)


class ClientGone(Exception):
    """The client closed its connection; nothing more can be sent."""


def client_headers(
    headers: Headers, cache_status: str, *, age: int | None = None
) -> CIMultiDict[str]:
    """The end-to-end response headers a client receives, with our own fields added."""
    out = end_to_end(headers, drop=DROP_FROM_STORED)
    if age is not None:
        out.popall("Age", None)
        out["Age"] = str(age)
    with_via(out, "1.1", VIA)
    out["Cache-Status"] = cache_status
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
    request: web.BaseRequest, response: web.StreamResponse, fd: int, length: int
) -> None:
    """The body of a hit, by sendfile."""
    if request.method == "HEAD":
        return
    try:
        await send_range(_transport(request), fd, 0, length)
        await response.write_eof()
    except (ConnectionError, EOFError) as exc:
        abort(request)
        raise ClientGone() from exc


async def send_growing(
    request: web.BaseRequest, response: web.StreamResponse, fill: Fill, reader: int
) -> None:
    """The body of a fill in flight: from its temp file as it grows, then from its
    in-memory tail if the fill had to stop storing."""
    if request.method == "HEAD":
        return
    fd = fill.open_reader()
    sent = 0
    try:
        while True:
            in_file = fill.file_bytes
            if fd is not None and sent < in_file:
                await _copy(request, response, fd, sent, in_file - sent)
                sent = in_file
                fill.tail.advance(reader, sent)
                continue
            if fill.tail.active and (data := fill.tail.read(sent)):
                await response.write(data)
                sent += len(data)
                fill.tail.advance(reader, sent)
                continue
            if fill.error is not None:
                abort(request)
                raise fill.error
            if fill.finished:
                break
            await fill.wait_progress()
        await response.write_eof()
    except (ConnectionError, EOFError) as exc:
        abort(request)
        raise ClientGone() from exc
    finally:
        if fd is not None:
            os.close(fd)


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
