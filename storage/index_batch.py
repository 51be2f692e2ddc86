"""Index calls that wait together: the calls of one kind made while the index thread is
busy go to it in one hand-off (and, for writes, one transaction) instead of one each.

Under a burst of misses every fill asks whether a purge covers it and then indexes its
entry; one at a time, each is a round trip to the index thread and back, which costs more
than the SQLite work. The callers still await their own answer, and an error reaches every
caller of the batch it broke."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class IndexBatch(Generic[Item, Result]):
    def __init__(self, executor: Executor, run_many: Callable[[list[Item]], list[Result]]):
        self.executor = executor
        self.run_many = run_many  # runs on the index thread: one result per item, in order
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._running = False
        self._drainer: asyncio.Task[None] | None = None

    async def settled(self) -> None:
        """Return once every call made so far has run (so that a call made directly on the
        index thread afterwards runs after them)."""
        if self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)

    async def call(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, answer))
        if not self._running:
            self._running = True
            self._drainer = loop.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await loop.run_in_executor(
                        self.executor, self.run_many, [item for item, _ in batch]
                    )
                except Exception as exc:  # noqa: BLE001 - handed to every caller
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for (_, answer), result in zip(batch, results, strict=True):
                    if not answer.done():
                        answer.set_result(result)
        finally:
            self._running = False
