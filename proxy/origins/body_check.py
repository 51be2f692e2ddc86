"""The one check every origin's body goes through: the between-bytes and total deadlines,
and the framing that Content-Length declares.

An origin hands over its raw chunks as an async generator. Such a source may return bytes
it has buffered already without ever suspending (aiohttp's `readany`, botocore's `read`, a
file read that always has data): an `asyncio.timeout` around it is then never given the
chance to fire, and a fast origin could outrun every deadline. So the clock is also read
after every chunk, and before asking for the next one (time spent by the consumer, e.g.
writing the temp file, counts against the total deadline too)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

import structlog

from proxy.errors import IncompleteBody, OriginTimeout
from proxy.redact import describe

log = structlog.get_logger("pixcache.origin")


@dataclass(frozen=True)
class BodyLimits:
    """The deadlines of one fetch's body: at most `read` seconds between two chunks, and
    everything done by `total_at` (event loop time). `timeout(stage)` is the origin's own
    OriginTimeout for "read" or "total"."""

    read: float
    total_at: float
    timeout: Callable[[str], OriginTimeout]


async def checked_body(
    raw: AsyncGenerator[bytes, None],
    limits: BodyLimits,
    *,
    expected: int | None,
    origin: str,
    broken: tuple[type[BaseException], ...],
    what: str = "body",
    timings: dict[str, float] | None = None,
) -> AsyncIterator[bytes]:
    """The chunks of `raw`, under `limits`, and never more than `expected` bytes.

    The source's own errors listed in `broken` become IncompleteBody (their text goes to
    the log only, as `detail`); `what` names the body in messages. A deadline that runs
    out becomes `limits.timeout(stage)`. `raw` is closed however the body ends, so the
    origin can tell a body read to its end (its connection reusable) from one given up."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    received = 0
    try:
        while True:
            asked = loop.time()
            if asked >= limits.total_at:
                raise limits.timeout("total")
            gap_end = asked + limits.read
            stage = "read" if gap_end < limits.total_at else "total"
            try:
                async with asyncio.timeout_at(min(gap_end, limits.total_at)):
                    chunk = await anext(raw, b"")
            except TimeoutError:
                raise limits.timeout(stage) from None
            except broken as exc:
                raise IncompleteBody(
                    f"{what} broken after {received} bytes", origin=origin, detail=describe(exc)
                ) from exc
            # The chunk may have come without a suspension: the timeout could not fire.
            arrived = loop.time()
            if arrived >= limits.total_at:
                raise limits.timeout("total")
            if arrived > gap_end:
                raise limits.timeout("read")
            if not chunk:
                break
            if expected is not None and received + len(chunk) > expected:
                # RFC 9112 §6.3: the message is exactly Content-Length bytes; what follows
                # is not part of it and never reaches the cache or a client.
                log.warning("body_longer_than_length", origin=origin, declared=expected)
                chunk = chunk[: expected - received]
                received += len(chunk)
                if chunk:
                    yield chunk
                break
            received += len(chunk)
            yield chunk
    finally:
        await raw.aclose()
    if expected is not None and received != expected:
        raise IncompleteBody(f"{what} ended after {received} of {expected} bytes", origin=origin)
    if timings is not None:
        timings["body"] = round(loop.time() - started, 6)
