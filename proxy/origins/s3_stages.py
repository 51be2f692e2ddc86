"""Stage deadlines for aiobotocore: a per-fetch stage clock, and the connector that moves it.

botocore knows two timeouts (connect, read), applies the connect one to the TCP connect and
the TLS handshake together, and retries on top of both. To give every stage its own deadline
we run each S3 call inside one asyncio timeout (`StageClock.timer`) and reschedule it as the
call moves on:

- "connect" when aiohttp asks our connector for a connection (DNS resolution and waiting for
  a pooled connection count too);
- "tls" when the TCP socket is connected and the endpoint is https;
- "headers" when the connection is ready: aiohttp writes the request right after;
- none (only the total deadline) when botocore has an answer for one attempt, so a retry's
  backoff pause is not charged to any stage.

A stage that runs out cancels the S3 call from outside: botocore never sees our deadlines as
errors, so it cannot retry them, and the caller knows from the clock which stage it was.

The connector reaches the clock through a ContextVar: aiohttp connects in the task that
makes the call. aiobotocore takes the connector through `AioConfig(http_session_cls=...)`
and its `AIOHTTPSession._create_connector` hook (aiobotocore >= 3.8).
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohappyeyeballs
import aiohttp
from aiobotocore.httpsession import AIOHTTPSession, _ProxySSLTCPConnector

from proxy.config import Deadlines
from proxy.origins.pool import IdleGuardedConnector

if not hasattr(AIOHTTPSession, "_create_connector"):  # pragma: no cover - packaging guard
    raise ImportError("pixcache's S3 origin needs aiobotocore >= 3.8 (AIOHTTPSession hooks)")


def stage_seconds(deadlines: Deadlines, stage: str) -> float:
    return {
        "connect": deadlines.connect,
        "tls": deadlines.tls,
        "headers": deadlines.headers,
        "read": deadlines.read,
        "total": deadlines.total,
    }[stage]


@dataclass
class StageClock:
    """Which stage of one fetch runs now, and the seconds each took. Entering a stage
    reschedules `timer` to that stage's deadline (None: no stage deadline)."""

    deadlines: Deadlines
    timer: asyncio.Timeout | None = None
    stage: str | None = None
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)

    def enter(self, stage: str | None) -> None:
        now = time.monotonic()
        if self.stage is not None:  # the attempts of one fetch add up
            spent = self.timings.get(self.stage, 0.0) + now - self.started
            self.timings[self.stage] = round(spent, 6)
        self.stage, self.started = stage, now
        # An expired timer is cancelling the call already; it cannot be rescheduled.
        if self.timer is not None and not self.timer.expired():
            if stage is None:
                self.timer.reschedule(None)
            else:
                loop = asyncio.get_running_loop()
                self.timer.reschedule(loop.time() + stage_seconds(self.deadlines, stage))


current_clock: contextvars.ContextVar[StageClock] = contextvars.ContextVar("pixcache_s3_clock")


def between_attempts(**_: Any) -> None:
    """botocore's `response-received` event: one attempt has its answer (or error), and a
    retry may pause next. No stage runs until the next attempt connects."""
    clock = current_clock.get(None)
    if clock is not None:
        clock.enter(None)


class StagedConnector(IdleGuardedConnector, _ProxySSLTCPConnector):
    """aiobotocore's connector, moving the stage clock at connect, TLS and ready. aiohttp's
    `sock_connect` timeout is not applied here (ours are)."""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        clock = current_clock.get(None)
        if clock is not None:
            clock.enter("connect")
        connection = await super().connect(req, traces, timeout)
        if clock is not None:
            clock.enter("headers")  # the request is written as soon as we return
        return connection

    async def _wrap_create_connection(  # type: ignore[override]
        self,
        *args: Any,
        addr_infos: Any,
        req: Any,
        timeout: Any,
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> Any:
        clock = current_clock.get(None)
        try:
            sock = await aiohappyeyeballs.start_connection(addr_infos=addr_infos)
        except OSError as exc:
            raise client_error(req.connection_key, exc) from exc
        if not kwargs.get("ssl"):
            return await self._loop.create_connection(*args, **kwargs, sock=sock)
        if clock is not None:
            clock.enter("tls")
            # asyncio's own handshake timer must not fire before ours does.
            kwargs["ssl_handshake_timeout"] = clock.deadlines.tls + 1
        try:
            return await self._loop.create_connection(*args, **kwargs, sock=sock)
        except ssl.CertificateError as exc:
            sock.close()
            raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl.SSLError as exc:
            sock.close()
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            sock.close()
            raise client_error(req.connection_key, exc) from exc
        except BaseException:  # our deadline cancelled the handshake
            sock.close()
            raise


class StagedSession(AIOHTTPSession):
    """aiobotocore's HTTP session on our connector. No pool limit (botocore's default is
    10): the proxy bounds its fills itself, as for the HTTP origin."""

    async def _create_connector(self, proxy_url: str | None) -> StagedConnector:
        ssl_context, proxy_ssl_context = await asyncio.to_thread(
            self._build_ssl_contexts, proxy_url
        )
        return StagedConnector(
            limit=0, ssl=ssl_context, proxy_ssl_context=proxy_ssl_context, **self._connector_args
        )
