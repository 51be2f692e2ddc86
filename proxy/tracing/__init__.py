"""Tracing hooks: one object the request path calls at the points it already observes.

`NO_TRACING` is what runs by default: each hook does nothing, and the hit paths call none
(proxy/hot.py knows nothing of tracing; the handler checks one attribute before its lookup
hook). `make_tracing` builds the OpenTelemetry implementation (proxy/tracing/otel.py)
when the standard OTEL_* variables switch it on (proxy/tracing/settings.py); the
opentelemetry packages are imported only then, so a default install need not carry them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from proxy.tracing.settings import TraceSettings

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.origins.base import Origin

T = TypeVar("T")
Handle = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


class NoSpan:
    """What `Tracing.span` gives when tracing is off: attributes go nowhere."""

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def __enter__(self) -> NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = NoSpan()


class Tracing:
    """Tracing switched off. Every hook is here with the meaning the OpenTelemetry
    implementation gives it; this one does nothing."""

    enabled = False

    def serve(self, handle: Handle) -> Handle:
        """The request handler, each call of it under one server span."""
        return handle

    def wrap_origin(self, origin: Origin) -> Origin:
        """The origin, each fetch of it under a client span, its trace context sent."""
        return origin

    async def lookup(self, pending: Awaitable[T]) -> T:
        """The handler's lookup, under a span (never called while tracing is off)."""
        return await pending

    def served(self, served: Any) -> None:
        """What the handler served (proxy/observe.Served), for the request's server span
        (never called while tracing is off)."""
        return None

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Any]:
        """A step of a fill (lock wait, guard, commit), as a child of the current span."""
        return _NO_SPAN

    def fill_started(self, fill: Any) -> AbstractContextManager[Any]:
        """A fill starts for the current request: the context its task is created in."""
        return nullcontext()

    def fill_joined(self, fill: Any) -> None:
        """The current request joined `fill`, which another request started."""
        return None

    def fill_ended(self, fill: Any) -> None:
        """The fill's task is done: its final state and error, if any."""
        return None

    def close(self) -> None:
        """Export what is still buffered; the app is stopping."""
        return None


NO_TRACING = Tracing()


def make_tracing(settings: TraceSettings) -> Tracing:
    """NO_TRACING unless the settings switch tracing on; then an exporting one, built in
    the process that serves (a worker builds its own after the fork: the exporter's thread
    does not survive one)."""
    if not settings.enabled:
        return NO_TRACING
    from proxy.tracing.otel import exporting_tracing

    return exporting_tracing(settings)


__all__ = ["NO_TRACING", "NoSpan", "TraceSettings", "Tracing", "make_tracing"]
