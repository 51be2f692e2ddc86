"""The body check every origin shares (proxy/origins/body_check.py), on sources that behave
as the worst origins do: one that always has bytes ready and never suspends, one that sends
more than it declared, one that stops short, one that breaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from proxy.errors import IncompleteBody, OriginTimeout
from proxy.origins.body_check import BodyLimits, checked_body

CHUNK = b"x" * 1024


class Source:
    """An async generator of `count` chunks (endless when None) that never suspends, and
    records whether it was closed before its end."""

    def __init__(self, count: int | None, *, chunk: bytes = CHUNK) -> None:
        self.count = count
        self.chunk = chunk
        self.given = 0
        self.closed_early = False

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        ended = False
        try:
            while self.count is None or self.given < self.count:
                self.given += 1
                yield self.chunk
            ended = True
        finally:
            self.closed_early = not ended


def limits(read: float = 30.0, total: float = 30.0) -> BodyLimits:
    now = asyncio.get_running_loop().time()
    return BodyLimits(read, now + total, lambda stage: OriginTimeout(stage, 1, origin="o"))


async def drain(body: AsyncIterator[bytes]) -> bytes:
    got = b""
    async for chunk in body:
        got += chunk
    return got


async def test_a_source_that_never_suspends_still_meets_the_total_deadline() -> None:
    source = Source(None)
    body = checked_body(
        source.chunks(), limits(total=0.2), expected=None, origin="o", broken=(OSError,)
    )
    received = 0
    with pytest.raises(OriginTimeout) as caught:
        async for chunk in body:
            received += len(chunk)
            if received > (64 << 30):
                break  # bounded: 64 GiB would mean the deadline never held
    assert caught.value.stage == "total"
    assert source.closed_early


async def test_time_the_consumer_spends_counts_against_the_total_deadline() -> None:
    source = Source(None)
    body = checked_body(
        source.chunks(), limits(total=0.2), expected=None, origin="o", broken=(OSError,)
    )
    with pytest.raises(OriginTimeout):
        for _ in range(100):
            await anext(body)
            await asyncio.sleep(0.05)  # a consumer slower than the deadline allows
    assert source.given < 100


async def test_bytes_past_the_declared_length_are_cut_off() -> None:
    source = Source(5)
    expected = 3 * len(CHUNK) + 10
    body = checked_body(source.chunks(), limits(), expected=expected, origin="o", broken=())
    got = await drain(body)
    assert got == (CHUNK * 4)[:expected]
    assert source.closed_early  # the rest was never read


async def test_fewer_bytes_than_declared_are_an_incomplete_body() -> None:
    body = checked_body(Source(2).chunks(), limits(), expected=5000, origin="o", broken=())
    with pytest.raises(IncompleteBody, match="ended after 2048 of 5000 bytes"):
        await drain(body)


async def test_the_sources_own_errors_become_incomplete_body() -> None:
    async def breaks() -> AsyncGenerator[bytes, None]:
        yield CHUNK
        raise ConnectionResetError("peer 10.0.0.1 reset")

    body = checked_body(breaks(), limits(), expected=None, origin="o", broken=(OSError,))
    with pytest.raises(IncompleteBody) as caught:
        await drain(body)
    assert caught.value.message == "body broken after 1024 bytes"  # no address in it
    assert "10.0.0.1" in caught.value.detail  # for the log only


async def test_a_gap_longer_than_the_read_deadline() -> None:
    async def stalls() -> AsyncGenerator[bytes, None]:
        yield CHUNK
        await asyncio.sleep(5)
        yield CHUNK

    body = checked_body(stalls(), limits(read=0.1), expected=None, origin="o", broken=())
    with pytest.raises(OriginTimeout) as caught:
        await drain(body)
    assert caught.value.stage == "read"


async def test_a_whole_body_records_its_time() -> None:
    timings: dict[str, float] = {}
    body = checked_body(
        Source(3).chunks(),
        limits(),
        expected=3 * len(CHUNK),
        origin="o",
        broken=(),
        timings=timings,
    )
    assert await drain(body) == CHUNK * 3
    assert "body" in timings
