"""Tracing with OpenTelemetry: one server span per request, the cache's steps under it.

    GET                      server span; parent: the client's `traceparent`, if valid
    ├── cache.lookup         the stored entry (following a Vary marker)
    └── cache.fill           only the request that started the fill (the leader)
        ├── cache.fill_slot  waiting for one of --max-fills
        ├── cache.lock_wait  the key's lock, held by another worker's fill
        ├── origin.fetch     client span; its context goes to the origin as `traceparent`
        │   ├── origin.connect, origin.tls, origin.headers, origin.body
        ├── image.guard      the header probe (image.decode too, in decode mode)
        └── cache.commit

A request that joins a fill in flight gets a link to the fill's span and a `fill.joined`
event; the fill gets a `fill.reader_joined` event naming the joiner's trace. Every log
line written while the request is handled carries its `request_id` and `trace_id`.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import structlog
from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from proxy.observe import HIT, Served, request_id
from proxy.origins.base import Origin
from proxy.tracing import Handle, Tracing
from proxy.tracing.origin import TracedOrigin
from proxy.tracing.settings import TraceSettings

T = TypeVar("T")
VERSION = "0.1.0"
STATUS = "http.response.status_code"
HIT_SENT = Served(200, HIT)


class OtelTracing(Tracing):
    """Spans through `provider` (which exports them: OTLP, the console, or a test's
    in-memory exporter)."""

    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("pixcache", VERSION)
        self._fill_spans: dict[Any, trace.Span] = {}  # fills in flight: from start to end

    def serve(self, handle: Handle) -> Handle:
        tracer = self.tracer

        async def traced(request: web.Request) -> web.StreamResponse:
            # W3C Trace Context: a valid incoming `traceparent` is the parent; anything
            # else in it is ignored (the propagator parses it strictly, and only the ids it
            # parsed are used, never the client's text).
            parent = propagate.extract(request.headers)
            rid = request_id(request)
            attributes: dict[str, Any] = {
                "http.request.method": request.method,
                "url.path": request.rel_url.raw_path,
                "url.scheme": request.scheme,
                "network.protocol.version": f"{request.version.major}.{request.version.minor}",
                "pixcache.request_id": rid,
            }
            if request.rel_url.raw_query_string:
                attributes["url.query"] = request.rel_url.raw_query_string
            with tracer.start_as_current_span(
                request.method,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                trace_id = trace.format_trace_id(span.get_span_context().trace_id)
                try:
                    with structlog.contextvars.bound_contextvars(request_id=rid, trace_id=trace_id):
                        response = await handle(request)
                except Exception as exc:  # the handler answers its own errors; a bug
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise
                if STATUS not in (getattr(span, "attributes", None) or {}):
                    # The hot path answered (proxy/hot.py, which knows nothing of tracing):
                    # a hit, sent whole, or cut when the connection failed under it.
                    cut = request.transport is None or request.transport.is_closing()
                    _record_served(span, Served(499, HIT, client_gone=True) if cut else HIT_SENT)
                return response

        return traced

    def served(self, served: Served) -> None:
        _record_served(trace.get_current_span(), served)

    def wrap_origin(self, origin: Origin) -> Origin:
        return TracedOrigin(origin, self.tracer)

    async def lookup(self, pending: Awaitable[T]) -> T:
        with self.tracer.start_as_current_span("cache.lookup") as span:
            found = await pending
            entry = getattr(found, "entry", None)
            span.set_attribute("pixcache.found", entry is not None)
            return found

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Any]:
        return self.tracer.start_as_current_span(name, attributes=attributes or None)

    def fill_started(self, fill: Any) -> AbstractContextManager[Any]:
        span = self.tracer.start_span("cache.fill", attributes={"pixcache.key": fill.key})
        self._fill_spans[fill] = span
        return _current(trace.set_span_in_context(span))

    def fill_joined(self, fill: Any) -> None:
        span = self._fill_spans.get(fill)
        if span is None:
            return
        joiner = trace.get_current_span()
        fill_ids, joiner_ids = span.get_span_context(), joiner.get_span_context()
        joiner.add_link(fill_ids, {"pixcache.link": "joined fill"})
        joiner.add_event(
            "fill.joined",
            {
                "pixcache.fill.trace_id": trace.format_trace_id(fill_ids.trace_id),
                "pixcache.fill.span_id": trace.format_span_id(fill_ids.span_id),
            },
        )
        if joiner_ids.is_valid:
            span.add_event(
                "fill.reader_joined",
                {"pixcache.reader.trace_id": trace.format_trace_id(joiner_ids.trace_id)},
            )

    def fill_ended(self, fill: Any) -> None:
        span = self._fill_spans.pop(fill, None)
        if span is None:
            return
        span.set_attribute("pixcache.fill.state", fill.state.value)
        error = fill.body.error
        if error is not None:
            span.set_attribute("error.type", error.event)
            if error.stage:
                span.set_attribute("pixcache.origin.stage", error.stage)
            span.set_status(Status(StatusCode.ERROR, error.message))
        span.end()

    def close(self) -> None:
        self.provider.shutdown()


@contextmanager
def _current(ctx: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def _record_served(span: trace.Span, served: Served) -> None:
    """What the request's log line says, on its server span."""
    span.set_attribute(STATUS, served.status)
    span.set_attribute("pixcache.cache", served.cache.outcome)
    if served.cache.collapsed:
        span.set_attribute("pixcache.collapsed", True)
    if served.body_bytes:
        span.set_attribute("http.response.body.size", served.body_bytes)
    if served.client_gone:
        span.set_attribute("pixcache.client_gone", True)
    if served.error is not None:
        span.set_attribute("error.type", served.error.event)
        if served.error.stage:
            span.set_attribute("pixcache.origin.stage", served.error.stage)
    if served.status >= 500:  # OpenTelemetry's HTTP conventions: a 4xx is the client's
        span.set_status(Status(StatusCode.ERROR, served.error.message if served.error else ""))


def exporting_tracing(settings: TraceSettings) -> OtelTracing:
    """Tracing that exports in batches, from a thread of this process."""
    resource = Resource.create({SERVICE_VERSION: VERSION})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "pixcache"}))
    provider = TracerProvider(resource=resource)
    for name in settings.exporters:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter: Any = OTLPSpanExporter()  # endpoint, headers: OTEL_EXPORTER_OTLP_*
        else:  # console: stderr, as stdout carries the JSON log lines
            exporter = ConsoleSpanExporter(out=sys.stderr)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return OtelTracing(provider)
