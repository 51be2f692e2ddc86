"""HTTP(S) origin on aiohttp's client, with five deadlines that each fail on their own.

aiohttp times the TCP connect and the TLS handshake together (`sock_connect`) and has no
deadline for the response headers alone, so we time every stage ourselves:

- connect and tls: in our connector, around the TCP connect and then the handshake;
- headers: from the moment the request is sent (a trace hook) to the status line;
- read: the longest gap between two body chunks;
- total: the whole fetch, body included.

The body's two deadlines and its length are checked by proxy/origins/body_check.py, as for
every origin.

Every exception of aiohttp, ssl and the OS is mapped here, once, to proxy.errors.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohappyeyeballs
import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy.config import Deadlines
from proxy.errors import OriginTimeout, OriginUnavailable, ProxyError
from proxy.origins.base import OriginResponse
from proxy.origins.body_check import BodyLimits, checked_body
from proxy.origins.pool import IdleGuardedConnector, PoolUse, pool_use
from proxy.redact import describe

KEEPALIVE_SECONDS = 4.0


class _StageTimeout(Exception):
    def __init__(self, stage: str) -> None:
        self.stage = stage


@dataclass
class _FetchClock:
    """Per-fetch timing state, reached from the connector and trace hooks via a ContextVar
    (they run in the fetching task)."""

    deadlines: Deadlines
    header_deadline: asyncio.Timeout | None = None
    timings: dict[str, float] = field(default_factory=dict)
    stage_started: float = field(default_factory=time.monotonic)

    def lap(self, stage: str) -> None:
        now = time.monotonic()
        self.timings[stage] = round(now - self.stage_started, 6)
        self.stage_started = now


_clock: contextvars.ContextVar[_FetchClock] = contextvars.ContextVar("pixcache_fetch_clock")


class _StagedConnector(IdleGuardedConnector):
    """A connector that gives the TCP connect and the TLS handshake a deadline each."""

    async def _wrap_create_connection(  # type: ignore[override]
        self,
        *args: Any,
        addr_infos: Any,
        req: Any,
        timeout: Any,
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> Any:
        clock = _clock.get()
        try:
            async with asyncio.timeout(clock.deadlines.connect):
                sock = await aiohappyeyeballs.start_connection(addr_infos=addr_infos)
        except TimeoutError:
            raise _StageTimeout("connect") from None
        except OSError as exc:
            raise client_error(req.connection_key, exc) from exc
        clock.lap("connect")
        if not kwargs.get("ssl"):
            return await self._loop.create_connection(*args, **kwargs, sock=sock)
        # asyncio's own handshake timer must not fire before ours does.
        kwargs["ssl_handshake_timeout"] = clock.deadlines.tls + 1
        try:
            async with asyncio.timeout(clock.deadlines.tls):
                connection = await self._loop.create_connection(*args, **kwargs, sock=sock)
        except TimeoutError:
            sock.close()
            raise _StageTimeout("tls") from None
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise OriginUnavailable(
                "TLS handshake failed", stage="tls", detail=describe(exc)
            ) from exc
        clock.lap("tls")
        return connection


async def _on_request_sent(session: Any, ctx: SimpleNamespace, params: Any) -> None:
    """The request is on the wire: from now on the headers deadline runs."""
    clock = _clock.get()
    clock.stage_started = time.monotonic()
    if clock.header_deadline is not None:
        loop = asyncio.get_running_loop()
        clock.header_deadline.reschedule(loop.time() + clock.deadlines.headers)


# What RFC 3986 §3.3/§3.4 allow in a path and query, escapes included.
_TARGET_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%"
)


def origin_url(base_url: str, path_qs: str) -> URL | str:
    """The origin's URL for a target exactly as the client sent it: image services sign the
    path as written (imgproxy, imagor and thumbor compute their HMAC over it), so `%3A`
    must not become `:` on the way. A target with any other character is left to yarl,
    which escapes it, so nothing that is not a URL reaches the request line."""
    url = base_url + path_qs
    return URL(url, encoded=True) if set(path_qs) <= _TARGET_CHARS else url


class HttpOrigin:
    def __init__(self, base_url: str, deadlines: Deadlines, *, ca_file: Path | None = None):
        self.name = base_url
        self.base_url = base_url
        self.deadlines = deadlines
        self._ssl: ssl.SSLContext | bool = True
        if ca_file is not None:
            self._ssl = ssl.create_default_context(cafile=str(ca_file))
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_on_request_sent)
            self._session = aiohttp.ClientSession(
                connector=_StagedConnector(
                    ssl=self._ssl,
                    limit=0,
                    ttl_dns_cache=60,
                    # Shorter than the idle timeouts origins commonly use (5 s and up), so
                    # we do not send a request on a connection the origin is closing.
                    keepalive_timeout=KEEPALIVE_SECONDS,
                ),
                # All deadlines are ours (see module doc); aiohttp's are switched off.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
                trace_configs=[trace],
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
        return self._session

    async def fetch(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes] | None = None,
    ) -> OriginResponse:
        clock = _FetchClock(self.deadlines)
        try:
            return await self._fetch(method, path_qs, headers, body, clock)
        except ProxyError as exc:
            exc.timings = clock.timings  # the stages done before the failed one
            raise

    async def _fetch(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes] | None,
        clock: _FetchClock,
    ) -> OriginResponse:
        url = origin_url(self.base_url, path_qs)
        _clock.set(clock)
        pool_use.set(PoolUse(bodiless=body is None))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadlines.total
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout_at(deadline):
                # No header deadline until the request is sent (_on_request_sent).
                async with asyncio.timeout(None) as header_deadline:
                    clock.header_deadline = header_deadline
                    response = await self._client().request(
                        method,
                        url,
                        headers=headers,
                        data=body,
                        allow_redirects=False,
                        ssl=self._ssl,
                    )
            clock.lap("headers")
        except _StageTimeout as exc:
            raise self._timeout(exc.stage) from None
        except TimeoutError:
            stage = "headers" if header_deadline.expired() else "total"
            raise self._timeout(stage) from None
        except OriginUnavailable as exc:
            exc.origin = self.name
            raise
        except aiohttp.ClientConnectorError as exc:
            raise OriginUnavailable(
                f"cannot connect: {_reason(exc.os_error)}",
                stage="connect",
                origin=self.name,
                detail=describe(exc),
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise OriginUnavailable(
                "no valid response", stage="headers", origin=self.name, detail=describe(exc)
            ) from exc
        if response.status == 101:
            # RFC 9110 §15.2.2: 101 only answers a request that asked to upgrade, and ours
            # never do; what follows on the connection is not HTTP. (aiohttp reads past
            # the other 1xx to the final response itself.)
            response.close()
            raise OriginUnavailable(
                "the origin switched protocols unasked", stage="headers", origin=self.name
            )
        limits = BodyLimits(self.deadlines.read, deadline, self._timeout)
        # RFC 9112 §6.3: a response to HEAD, and a 204 or 304, ends after its headers
        # whatever Content-Length says.
        bodiless = method == "HEAD" or response.status in (204, 304)
        return OriginResponse(
            status=response.status,
            headers=response.headers,
            body=checked_body(
                _chunks(response),
                limits,
                expected=None if bodiless else response.content_length,
                origin=self.name,
                broken=(aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, OSError),
                timings=clock.timings,
            ),
            content_length=response.content_length,
            timings=clock.timings,
            close=_closer(response),
            limits=limits,
        )

    def _timeout(self, stage: str) -> OriginTimeout:
        seconds = {
            "connect": self.deadlines.connect,
            "tls": self.deadlines.tls,
            "headers": self.deadlines.headers,
            "read": self.deadlines.read,
            "total": self.deadlines.total,
        }[stage]
        return OriginTimeout(stage, seconds, origin=self.name)

    async def prepare(self) -> None:
        return None  # the session is made by the first fetch, at no cost worth a deadline

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _reason(error: OSError) -> str:
    """An OS error in words, without the address it names (that goes to the log only)."""
    return (error.strerror or type(error).__name__).lower()


async def _chunks(response: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
    """The body as aiohttp buffers it (deadlines and length: proxy/origins/body_check.py)."""
    ended = False
    try:
        while chunk := await response.content.readany():
            yield chunk
        ended = True
    except RuntimeError as exc:
        # aiohttp's own word for "the connection closed under this read", as when its
        # parser refused the rest of a chunked body.
        raise aiohttp.ClientPayloadError("connection closed inside the body") from exc
    finally:
        # A connection whose body was not read to its end cannot be reused.
        response.release() if ended else response.close()


def _closer(response: aiohttp.ClientResponse) -> Any:
    async def close() -> None:
        response.close()

    return close
