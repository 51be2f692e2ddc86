"""Index calls made while the index thread is busy go in one hand-off, and each caller
still gets its own answer, or the error of the batch it was in."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from storage.index_batch import IndexBatch


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until `condition` holds (a bound against a hang, not a timing assertion)."""
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"not true after {seconds} s")


async def turns(count: int = 10) -> None:
    """Let the event loop run `count` rounds: every task that can move on does."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_calls_made_while_one_runs_go_together_and_keep_their_answers() -> None:
    batches: list[list[int]] = []
    release = threading.Event()

    def run_many(items: list[int]) -> list[int]:
        batches.append(items)
        release.wait(5)  # the first batch holds the thread while the others queue up
        return [item * 10 for item in items]

    with ThreadPoolExecutor(1) as thread:
        batch: IndexBatch[int, int] = IndexBatch(thread, run_many)
        first = asyncio.create_task(batch.call(1))
        await until(lambda: batches == [[1]])  # the first batch holds the thread
        rest = [asyncio.create_task(batch.call(n)) for n in range(2, 7)]
        await turns()  # each call is queued
        release.set()
        assert await first == 10
        assert await asyncio.gather(*rest) == [20, 30, 40, 50, 60]
    assert batches == [[1], [2, 3, 4, 5, 6]]


async def test_an_error_reaches_every_caller_of_its_batch_and_no_other() -> None:
    def run_many(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky batch")
        return items

    with ThreadPoolExecutor(1) as thread:
        batch: IndexBatch[int, int] = IndexBatch(thread, run_many)
        calls = [asyncio.create_task(batch.call(n)) for n in (12, 13)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert await batch.call(14) == 14


@pytest.mark.parametrize("count", [1, 50])
async def test_every_caller_is_answered(count: int) -> None:
    with ThreadPoolExecutor(1) as thread:
        batch: IndexBatch[int, int] = IndexBatch(thread, lambda items: [-i for i in items])
        results = await asyncio.gather(*(batch.call(n) for n in range(count)))
    assert results == [-n for n in range(count)]


async def test_settled_returns_once_every_call_made_so_far_has_run() -> None:
    ran: list[int] = []
    release = threading.Event()

    entered: list[list[int]] = []

    def run_many(items: list[int]) -> list[None]:
        entered.append(items)
        release.wait(5)
        ran.extend(items)
        return [None] * len(items)

    with ThreadPoolExecutor(1) as thread:
        batch: IndexBatch[int, None] = IndexBatch(thread, run_many)
        calls = [asyncio.create_task(batch.call(n)) for n in range(3)]
        await until(lambda: bool(entered))  # the calls are running, held by `release`
        settled = asyncio.create_task(batch.settled())
        await turns()
        assert not settled.done()
        release.set()
        await settled
        assert sorted(ran) == [0, 1, 2]
        await asyncio.gather(*calls)
