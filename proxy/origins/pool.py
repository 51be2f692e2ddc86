"""Pooled origin connections that never carry bytes from one exchange into the next.

An HTTP/1.1 server sends nothing on a connection that has no request outstanding (RFC 9112
§9.3: responses answer requests in order). aiohttp's protocol keeps parsing while its
connection sits idle in the pool, so a response the origin sent unasked (or bytes beyond a
body's Content-Length, arriving late) would be read as the answer to the next request on
that connection: another URL's bytes, stored under this URL's key. A connection that
receives anything while idle is closed instead, and never leaves the pool again.

Bytes the event loop has not read yet are looked for too: a pooled connection is peeked at
(without reading) when a request takes it, and one with bytes waiting, or closed by the
origin, is dropped for the next; and again in the same step that writes a bodiless
request (then aiohttp sends it again on another connection), so nothing sent before the
request can pass for its answer. A request with a body always opens a new connection.

Bytes that arrive after the request has been sent cannot be told apart from its answer; no
HTTP/1.1 client can.

A fetch takes at most one pooled connection. An origin may close an idle connection just
as a request goes out on it (RFC 9112 §9.3.1); aiohttp then sends the (bodiless) request
once more, and that retry opens a new connection: the other pooled ones may be closing just
the same, as when the origin restarted.

Bytes that arrive with a response but past its Content-Length are kept from the parser
(proxy/origins/framing.py): the response is read as the origin framed it, and its
connection is closed instead of going back to the pool.
"""

from __future__ import annotations

import contextvars
import functools
import select
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp.client_exceptions import ServerDisconnectedError
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import TCPConnector

from proxy.origins.framing import ExactLengthParser

log = structlog.get_logger("pixcache.origin")


class _IdleGuardedProtocol(ResponseHandler):
    idle = False  # in the pool, between two exchanges
    reused = False  # has been in the pool

    def set_response_params(self, **kwargs: Any) -> None:
        # aiohttp calls this when a request takes the connection, before it is sent.
        self.idle = False
        super().set_response_params(**kwargs)
        # Bytes past the response's Content-Length are dropped, and the connection with it.
        self._parser = ExactLengthParser(
            self._parser, skip_payload=kwargs.get("skip_payload", False), on_excess=self._excess
        )

    def _excess(self, event: str) -> None:
        log.warning(event)
        self.force_close()

    def start_timeout(self) -> None:
        # aiohttp calls this just before it writes a request without a body, with no
        # await in between: bytes already here were sent before the request existed. The
        # connection is dropped before anything is written, and aiohttp sends the
        # (idempotent) request again on another connection, as after any reused connection
        # the server closed (RFC 9112 §9.3.1). (aiohttp also calls this once a request's
        # body has gone out, when bytes here may be the answer: not checked then.)
        use = pool_use.get()
        if self.reused and (use is None or use.bodiless) and not _quiet(self):
            self.force_close()
            if self.transport is not None:
                self.transport.close()
            raise ServerDisconnectedError("unasked bytes on a pooled connection")
        super().start_timeout()

    def data_received(self, data: bytes) -> None:
        if self.idle and data:
            self.force_close()
            if self.transport is not None:
                self.transport.close()
            return
        super().data_received(data)


def _quiet(protocol: ResponseHandler) -> bool:
    """True when nothing (no byte, no FIN, no error) waits unread on a plain TCP connection:
    one poll(2) that does not wait. TLS connections are left to data_received: the TLS
    layer may hold records of its own."""
    transport = protocol.transport
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return transport is not None
    poller = select.poll()
    poller.register(transport.get_extra_info("socket").fileno(), _UNREAD)
    return not poller.poll(0)


@dataclass
class PoolUse:
    """How the fetch running in this context may use pooled connections."""

    bodiless: bool  # its request has no body (see start_timeout and _get)
    took_pooled: bool = False  # it took a pooled connection once: its retry opens a new one


# Set by the HTTP origin for each fetch; None (the S3 origin): a bodiless request that
# may take any pooled connection.
pool_use: contextvars.ContextVar[PoolUse | None] = contextvars.ContextVar(
    "pixcache_pool_use", default=None
)
# Readable (bytes or FIN), peer closed its side, or an error: any of them means unasked.
_UNREAD = select.POLLIN | select.POLLPRI | select.POLLRDHUP | select.POLLERR | select.POLLHUP


class IdleGuardedConnector(TCPConnector):
    """A TCPConnector whose idle connections are closed on the first unasked byte. Mixed
    into the HTTP and S3 origins' connectors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._factory = functools.partial(_IdleGuardedProtocol, loop=self._loop)

    async def _get(self, key: Any, traces: Any) -> Any:
        use = pool_use.get()
        if use is not None and not use.bodiless:
            # A request with a body is written in more than one step, with awaits between,
            # so the same-step look in start_timeout cannot cover it: it never takes a pooled
            # connection, and bytes an origin sent unasked can never pass for its answer.
            return None
        if use is not None and use.took_pooled:
            return None  # a retry: see the module doc
        while (connection := await super()._get(key, traces)) is not None:
            if _quiet(connection.protocol):
                if use is not None:
                    use.took_pooled = True
                return connection
            connection.protocol.force_close()
            connection.close()  # and try the next pooled connection
        return None

    def _release(self, key: Any, protocol: Any, *, should_close: bool = False) -> None:
        super()._release(key, protocol, should_close=should_close)
        if protocol.is_connected():  # kept in the pool
            protocol.idle = protocol.reused = True
