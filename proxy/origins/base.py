"""What every origin returns."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.origins.body_check import BodyLimits


@dataclass
class OriginResponse:
    """Status and headers have arrived; `body` yields the rest and raises a ProxyError
    (IncompleteBody, OriginTimeout) when it cannot deliver all of it."""

    status: int
    headers: CIMultiDictProxy[str]
    body: AsyncIterator[bytes]
    # Declared body length; None for a chunked or close-delimited body.
    content_length: int | None
    # Seconds spent per stage so far (connect, tls, headers, then body when it ends).
    timings: dict[str, float] = field(default_factory=dict)
    close: Callable[[], Awaitable[None]] = field(default=lambda: _nothing())
    # The deadlines `body` is read under; whoever waits between chunks (a fill waiting for
    # its slowest reader) must stop at the total one too. None: nothing more to read.
    limits: BodyLimits | None = None

    async def stop(self) -> None:
        """Read nothing more of this body: close its iterator, then the origin response."""
        aclose = getattr(self.body, "aclose", None)
        if aclose is not None:
            await aclose()
        await self.close()


async def _nothing() -> None:
    return None


class Origin(Protocol):
    name: str

    async def fetch(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes] | None = None,
    ) -> OriginResponse: ...

    async def prepare(self) -> None:
        """Set up at start what the first fetch would otherwise pay for inside its deadlines."""

    async def close(self) -> None: ...


def text_response(
    status: int, text: str, cache_control: str = "", *, allow: str = ""
) -> OriginResponse:
    """A short answer of our own. No validator, and no freshness unless configured, so it
    is stored only when the operator asked for it."""
    body = text.encode()

    async def once() -> AsyncIterator[bytes]:
        yield body

    headers = CIMultiDict({"Content-Type": "text/plain; charset=utf-8"})
    headers["Content-Length"] = str(len(body))
    headers["Date"] = formatdate(usegmt=True)
    if cache_control:
        headers["Cache-Control"] = cache_control
    if allow:
        headers["Allow"] = allow
    return OriginResponse(status, CIMultiDictProxy(headers), once(), len(body))
