"""A fill's body as its readers see it: the bytes in its temp file, then, if the fill had
to stop storing, the bytes in its bounded in-memory tail (proxy/tail.py).

The fill is the only writer (the fields, `notify`, `seal`, `end`); each reader takes the
body with `read`, which yields what has arrived and waits for more until the fill ends it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from proxy.errors import ProxyError
from proxy.tail import Tail


@dataclass(frozen=True)
class FileSpan:
    """`count` bytes at `offset` of the temp file, for the reader to send (by sendfile)."""

    fd: int
    offset: int
    count: int


class FillBody:
    def __init__(self) -> None:
        self.read_fd: int | None = None  # readers dup this; it outlives the temp file
        self.file_bytes = 0  # bytes readers may take from the temp file
        self.tail = Tail()
        self.error: ProxyError | None = None
        # The length the origin declared, and whether the body arrived whole: until then
        # its last byte is held back, so no reader completes a body the fill may still
        # find to be of the wrong length (a body without a declared length is completed
        # only by the end of its framing, which readers send once the fill ended).
        self.declared: int | None = None
        self.sealed = False
        self.ended = False  # no byte will be added; `error` says whether it is whole
        self._progress = asyncio.Event()

    # -- for the fill --------------------------------------------------------------------
    def notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    def seal(self) -> None:
        self.sealed = True
        self.notify()

    def end(self, error: ProxyError | None = None) -> None:
        self.error = error
        self.sealed = self.sealed or error is None
        self.ended = True
        self.notify()

    # -- for readers ---------------------------------------------------------------------
    async def read(
        self, reader: int, first: int = 0, end: int | None = None
    ) -> AsyncIterator[FileSpan | bytes]:
        """Bytes [first, end) (to the end of the body when `end` is None) as they arrive.
        Raises the fill's error if it failed before they all came; stops early, short of
        `end`, only if the body ended there. Use inside contextlib.aclosing."""
        fd = None if self.read_fd is None else os.dup(self.read_fd)
        pos = first
        self.tail.advance(reader, first)  # bytes before `first` are not held for this one
        try:
            while end is None or pos < end:
                limit = self._sendable(self.file_bytes, end)
                if fd is not None and pos < limit:
                    yield FileSpan(fd, pos, limit - pos)
                    pos = limit
                elif self.tail.active and (data := self._from_tail(pos, end)):
                    yield data
                    pos += len(data)
                elif self.error is not None:
                    raise self.error
                elif self.ended:
                    return
                else:
                    await self._progress.wait()
                    continue
                self.tail.advance(reader, pos)  # sent: the tail may let go of it
        finally:
            if fd is not None:
                os.close(fd)

    def _sendable(self, arrived: int, end: int | None) -> int:
        """Where a reader may send up to, of `arrived` bytes, when it wants up to `end`."""
        if not self.sealed and self.declared is not None and arrived >= self.declared:
            arrived = self.declared - 1  # the last byte waits for `seal`
        return arrived if end is None else min(arrived, end)

    def _from_tail(self, pos: int, end: int | None) -> bytes:
        data = self.tail.read(pos)
        return data[: max(0, self._sendable(self.tail.end, end) - pos)]
