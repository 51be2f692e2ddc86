"""An origin whose every fetch is a client span, with the stages the origin timed as its
children, and whose requests carry that span's W3C trace context (`traceparent`,
`tracestate`) so the origin's own trace continues ours.

The stage spans are laid out from the seconds the origin adapter measured for its logs
and metrics (OriginResponse.timings, ProxyError.timings): connect and tls from the start
of the fetch, headers ending when the fetch returned, body ending when the body did. A
stage that failed runs from the end of the last one timed to the failure."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import replace

from multidict import CIMultiDict
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from proxy.errors import ProxyError
from proxy.origins.base import Origin, OriginResponse

# The stages the origin adapters time, in the order they happen.
FETCH_STAGES = ("connect", "tls", "headers")
# The span a failed stage is shown as: a deadline names the stage it bounds.
FAILED_STAGE_SPAN = {"connect": "connect", "tls": "tls", "headers": "headers", "read": "body"}
# Request fields of trace context: a client's are replaced by ours.
TRACE_FIELDS = ("traceparent", "tracestate")


class TracedOrigin:
    def __init__(self, origin: Origin, tracer: Tracer) -> None:
        self.inner = origin
        self.name = origin.name
        self.tracer = tracer

    async def fetch(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes] | None = None,
    ) -> OriginResponse:
        started = time.time_ns()
        span = self.tracer.start_span(
            "origin.fetch",
            kind=SpanKind.CLIENT,
            start_time=started,
            attributes={"http.request.method": method, "pixcache.origin": self.name},
        )
        fetch = _FetchSpan(self.tracer, span, started)
        headers = CIMultiDict(headers)
        for name in TRACE_FIELDS:
            headers.popall(name, None)
        propagate.inject(headers, context=trace.set_span_in_context(span))
        try:
            response = await self.inner.fetch(method, path_qs, headers, body)
        except ProxyError as exc:
            fetch.failed(exc, exc.timings or {}, during_body=False)
            raise
        except BaseException:  # cancelled: the span still ends
            fetch.end()
            raise
        fetch.headers_arrived(response)
        return replace(response, body=fetch.body(response), close=fetch.closer(response.close))

    async def prepare(self) -> None:
        await self.inner.prepare()

    async def close(self) -> None:
        await self.inner.close()


class _FetchSpan:
    """The span of one fetch, ended once: when the body ends, fails, or is closed."""

    def __init__(self, tracer: Tracer, span: trace.Span, started: int) -> None:
        self.tracer = tracer
        self.span = span
        self.started = started
        self.stages_end = started  # where the next stage span starts
        self.headers_at = started
        self.timings: dict[str, float] = {}
        self.ended = False

    def stage(self, name: str, start: int, end: int, error: ProxyError | None = None) -> None:
        span = self.tracer.start_span(
            f"origin.{name}", context=trace.set_span_in_context(self.span), start_time=start
        )
        if error is not None:
            span.set_attribute("error.type", error.event)
            span.set_status(Status(StatusCode.ERROR, error.message))
        span.end(end_time=max(start, end))
        self.stages_end = max(start, end)

    def fetch_stages(self, timings: dict[str, float], end: int | None) -> None:
        """connect and tls from the start; headers ending at `end` (None: not arrived)."""
        for name in FETCH_STAGES:
            seconds = timings.get(name)
            if seconds is None:
                continue  # a pooled connection has no connect or tls stage
            nanos = int(seconds * 1e9)
            if name == "headers" and end is not None:
                self.stage(name, max(self.stages_end, end - nanos), end)
            else:
                self.stage(name, self.stages_end, self.stages_end + nanos)

    def headers_arrived(self, response: OriginResponse) -> None:
        self.headers_at = time.time_ns()
        self.timings = response.timings
        self.fetch_stages(response.timings, self.headers_at)
        self.span.set_attribute("http.response.status_code", response.status)
        if response.content_length is not None:
            self.span.set_attribute("http.response.header.content-length", response.content_length)

    def failed(self, exc: ProxyError, timings: dict[str, float], *, during_body: bool) -> None:
        now = time.time_ns()
        if not during_body:
            self.fetch_stages(timings, None)
        stage = exc.stage or "read"
        name = FAILED_STAGE_SPAN.get(stage, "body" if during_body else "headers")
        self.stage(name, self.stages_end, now, exc)
        self.span.set_attribute("error.type", exc.event)
        self.span.set_attribute("pixcache.origin.stage", stage)
        self.span.set_status(Status(StatusCode.ERROR, exc.message))
        self.end(now)

    async def body(self, response: OriginResponse) -> AsyncIterator[bytes]:
        source = response.body
        received = 0
        try:
            async for chunk in source:
                received += len(chunk)
                yield chunk
        except ProxyError as exc:
            self.failed(exc, self.timings, during_body=True)
            raise
        else:
            seconds = self.timings.get("body")
            if seconds is not None:
                end = time.time_ns()
                self.stage("body", max(self.stages_end, end - int(seconds * 1e9)), end)
        finally:
            self.span.set_attribute("http.response.body.size", received)
            self.end()
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    def closer(self, close: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def closing() -> None:
            try:
                await close()
            finally:
                self.end()

        return closing

    def end(self, at: int | None = None) -> None:
        if not self.ended:
            self.ended = True
            self.span.end(end_time=at)
