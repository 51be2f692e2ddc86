"""Limits on client connections: how long a request head may take, how big it may be, how
long a keep-alive connection may sit idle, and how many connections a worker holds.

aiohttp (3.14) has an idle timer (`keepalive_timeout`, also started when a connection opens)
and per-line limits, but no deadline for a request head that trickles in, no limit on a
head's total size, and no limit on connections. Without them one client could hold a
connection open forever (slowloris), pin megabytes per connection in the parser, or open
sockets until the process ran out of descriptors. This module adds what is missing by
subclassing aiohttp's protocol (`RequestHandler`) and its connection registry (`Server`),
and relies on a few of their private attributes; tests/system/test_client_limits.py
checks each limit against a real process, so an aiohttp upgrade that moves them fails
there.

- Header timeout: a new connection must deliver a complete request head within it; on a
  keep-alive connection the idle timeout runs until the next head's first byte, and then
  the header timeout. A head still incomplete gets 408 (RFC 9110 §15.5.9) and the
  connection closes; a connection that never sent a byte is closed without a response.
- Head size and field count: a head larger than `max_head_bytes`, or with more fields than
  `max_header_fields`, gets 431 (RFC 6585 §5) as soon as it is known to be too large, so
  no more than about that many bytes of one head are ever held.
- Connections: past `max_connections`, a new connection takes the place of the connection
  that has been waiting for a request the longest (as nginx reuses idle keep-alive
  connections when it runs out); if every connection is busy with a request, the new one
  gets 503 and is closed at once. Either way the process never holds more sockets than
  the limit plus the one being turned away."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from proxy import metrics
from proxy.client_limits import ClientLimits

log = structlog.get_logger("pixcache.connections")

HEAD_END = b"\r\n\r\n"
# How long a refused connection keeps reading (and dropping) what the client still sends,
# so that the client can read the refusal (see _answer_and_linger).
LINGER_SECONDS = 2.0

REFUSAL_BODIES = {
    400: "bad request",
    408: "request head not received in time",
    414: "request line too long",
    431: "request header fields too large",
}
TOO_MANY_CONNECTIONS = b"too many open connections\n"
# Sent before the request is read (RFC 9112 §9.6 lets a server close at any time; a
# response tells the client why and when to try again).
SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n%s"
) % (len(TOO_MANY_CONNECTIONS), TOO_MANY_CONNECTIONS)


class LimitedRunner(web.AppRunner):
    """An AppRunner whose connections obey `limits`."""

    def __init__(self, app: web.Application, limits: ClientLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return LimitedServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            limits=self.limits,
            **server._kwargs,
        )


class LimitedServer(web.Server):
    """aiohttp's connection registry, making `ClientConnection`s and capping their number."""

    def __init__(self, handler: Any, *, limits: ClientLimits, **kwargs: Any) -> None:
        kwargs.update(
            keepalive_timeout=limits.idle_timeout,
            # The head's total size is checked before the parser sees it (ClientConnection),
            # so no one field can be longer than that; the parser's own field count stays
            # as a second check.
            max_field_size=limits.max_head_bytes,
            max_headers=limits.max_header_fields,
        )
        super().__init__(handler, **kwargs)
        self.limits = limits
        # Connections not yet closed by us, oldest first.
        self._open: dict[ClientConnection, None] = {}

    def __call__(self) -> ClientConnection:
        return ClientConnection(self, loop=self._loop, limits=self.limits, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        assert isinstance(handler, ClientConnection)
        self._open[handler] = None
        if len(self._open) <= self.limits.max_connections:
            return
        waiting = [c for c in self._open if c is not handler and c.waiting_for_request()]
        if waiting:
            longest = min(waiting, key=lambda c: c.idle_since)
            self.closed_by_us(longest)
            longest.force_close()
            metrics.CLIENT_CLOSES.labels("replaced").inc()
            return
        self.closed_by_us(handler)
        handler.refuse_connection()
        metrics.CLIENT_CLOSES.labels("too-many-connections").inc()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._open.pop(handler, None)  # type: ignore[call-overload]
        super().connection_lost(handler, exc)

    def closed_by_us(self, connection: ClientConnection) -> None:
        self._open.pop(connection, None)


class ClientConnection(RequestHandler):
    """One client connection: aiohttp's protocol plus a deadline for each request head and a
    running count of its bytes and fields."""

    def __init__(self, manager: web.Server, *, limits: ClientLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.limits = limits
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # of the head being received; 0: none started
        self._head_lines = 0
        self._head_tail = b""  # its last bytes, to find an end split across two reads
        self._body: StreamReader | None = None  # the last request's body, while it arrives
        self._refused = False
        self._linger_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    # -- state -------------------------------------------------------------------------
    @property
    def idle_since(self) -> float:
        """When the connection last began waiting for a request (aiohttp restarts its idle
        timer then)."""
        return self._next_keepalive_close_time - self._keepalive_timeout

    def waiting_for_request(self) -> bool:
        waiter = self._waiter
        return (
            not self._force_close
            and not self._messages
            and not self._request_in_progress
            and (waiter is None or not waiter.done())
        )

    def _reading_head(self) -> bool:
        """The parser is between requests (not inside a body, not upgraded)."""
        return (
            not self._upgraded
            and self._payload_parser is None
            and (self._body is None or self._body.is_eof())
        )

    # -- connection events -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._force_close:
            self._start_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        self.sending_resumed()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self._force_close:
            return
        if not data or not self._reading_head():
            # Inside a body: heads pipelined behind it may arrive in this very read.
            parsed_before = self._request_count
            super().data_received(data)
            if self._request_count > parsed_before:
                self._refuse_faulty_framing(self._request_count - parsed_before)
            return
        seen = self._head_tail + data
        end = seen.find(HEAD_END)
        # Bytes of this read that belong to the head, up to and including its empty line;
        # lines up to the end of the last field (one request line, then one per field).
        if end < 0:
            head_part, line_part = data, data
        else:
            stop = end + len(HEAD_END) - len(self._head_tail)
            head_part, line_part = data[:stop], data[: max(0, stop - 2)]
        head_bytes = self._head_bytes + len(head_part)
        head_lines = self._head_lines + line_part.count(b"\n")
        if (
            head_bytes > self.limits.max_head_bytes
            or head_lines - 1 > self.limits.max_header_fields
        ):
            self._refuse_head(431, "head-too-large")
            return
        # From its first byte a head has the header timeout, not aiohttp's idle timer (the
        # timer starts below, unless the head is complete in this very read).
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        parsed_before = self._request_count
        super().data_received(data)
        if self._request_count > parsed_before:
            self._refuse_faulty_framing(self._request_count - parsed_before)
            # A head was parsed (or refused by the parser). Bytes of a pipelined head after
            # it in this read are counted from the next read on: at most one read more.
            self._body = self._messages[-1][1] if self._messages else None
            self._head_bytes = self._head_lines = 0
            self._head_tail = b""
            self._cancel_head_timer()
        else:
            if self._head_bytes == 0 and self._head_timer is None:
                self._start_head_timer()
            self._head_bytes, self._head_lines = self._head_bytes + len(data), head_lines
            self._head_tail = seen[-(len(HEAD_END) - 1) :]

    # -- the head deadline -------------------------------------------------------------
    def _start_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self._loop.call_later(self.limits.header_timeout, self._head_overdue)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._force_close or self._refused:
            return
        if not self.waiting_for_request():
            # Requests before this head (pipelined) are still being answered: the client
            # is not the one holding things up. Look again later.
            self._start_head_timer()
            return
        if self._head_bytes == 0:
            metrics.CLIENT_CLOSES.labels("header-timeout").inc()
            self.force_close()  # never sent a byte: nothing to answer
        else:
            self._refuse_head(408, "header-timeout")

    # -- the send deadline -------------------------------------------------------------
    # aiohttp waits for the transport's buffer to drain, and sendfile for the socket to be
    # writable, as long as the client takes: a client that stops reading would hold the
    # connection, its body file and the fill's reader forever. Past the send timeout with
    # no progress the connection is cut (reset: a graceful close would wait for the same
    # buffers).
    def pause_writing(self) -> None:
        super().pause_writing()
        self.sending_stalled()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.sending_resumed()

    def sending_stalled(self) -> None:
        """The client takes no more bytes for now (also called by proxy/sendfile.py)."""
        if self._send_timer is None:
            self._send_timer = self._loop.call_later(self.limits.send_timeout, self._send_overdue)

    def sending_resumed(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_overdue(self) -> None:
        self._send_timer = None
        metrics.CLIENT_CLOSES.labels("send-timeout").inc()
        log.info("client_send_timeout", seconds=self.limits.send_timeout, peer=str(self.peername))
        if self.transport is not None:
            self.transport.abort()

    # -- refusals ----------------------------------------------------------------------
    def _refuse_head(self, status: int, why: str) -> None:
        """Answer `status` and close. The rest of what the client sends is never parsed."""
        self._refused = True
        self._cancel_head_timer()
        metrics.CLIENT_CLOSES.labels(why).inc()
        log.info("client_request_refused", status=status, reason=why, peer=str(self.peername))
        if self.transport is not None and self.waiting_for_request():
            self._answer_and_linger(status)
            return
        self._queue_refusal(status, why)

    def _queue_refusal(self, status: int, why: str) -> None:
        """Requests before this one (pipelined) are still being answered: this answer goes
        out after theirs, through aiohttp's own error path, which closes at once."""
        if self.transport is not None:
            self.transport.pause_reading()
        error = HttpProcessingError(code=status, message=REFUSAL_BODIES[status])
        self._messages.append((_ErrInfo(status=status, exc=error, message=why), EMPTY_PAYLOAD))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _refuse_faulty_framing(self, parsed: int) -> None:
        """RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing,
        whatever else it says, and the connection closes after it. Where its body ends is
        not known, so it is answered 400 (as nginx does) and nothing after it is read: not
        its body, not the requests pipelined behind it."""
        new = list(self._messages)[-parsed:]
        for index, (message, _) in enumerate(new):
            if (
                isinstance(message, RawRequestMessage)
                and message.version < HttpVersion11
                and hdrs.TRANSFER_ENCODING in message.headers
            ):
                for _ in range(len(new) - index):
                    self._messages.pop()
                self._refuse_head(400, "faulty-framing")
                return

    def _answer_and_linger(self, status: int) -> None:
        """RFC 9112 §9.6: closing at once while the client is still sending would reset the
        connection and could destroy the response before the client reads it. So: send it,
        close our sending side, and read (and drop) what still comes for a little while."""
        assert self.transport is not None
        body = (REFUSAL_BODIES[status] + "\n").encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self._loop.call_later(LINGER_SECONDS, self.force_close)

    def refuse_connection(self) -> None:
        """Too many connections and none idle: say so and close."""
        self._refused = True
        self._cancel_head_timer()
        if self.transport is not None:
            self.transport.write(SERVICE_UNAVAILABLE)
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        """A request the parser or these limits refused gets a short plain body in
        pixcache's words (never the client's bytes back, never a traceback) and the
        connection closes; a handler's failure is aiohttp's 500 as before."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            status = 414  # RFC 9112 §3: the head's total size is checked before the parser
        if status not in (408, 431):  # those were logged when refused
            log.info(
                "client_request_refused",
                status=status,
                reason=type(exc).__name__,
                peer=str(self.peername),
            )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started")
        response = web.Response(
            status=status, text=REFUSAL_BODIES.get(status, "bad request") + "\n"
        )
        response.force_close()
        return response
