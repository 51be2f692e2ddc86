"""The part of a fill's body that cannot go to disk (disk full, I/O error, object too large
or not admitted), held in memory only until every reader has sent it.

Memory stays bounded: the fill waits (and so stops reading from the origin) while the
slowest reader is more than LIMIT bytes behind."""

from __future__ import annotations

import asyncio
from collections import deque

LIMIT = 8 * 1024 * 1024


class Tail:
    def __init__(self) -> None:
        self.active = False
        self.base = 0  # body offset of the first byte held
        self.end = 0  # body offset after the last byte held
        self.dropped = 0  # bytes already released (all readers had sent them)
        self._chunks: deque[bytes] = deque()
        self._positions: dict[int, int] = {}
        self._next_reader = 0
        self._room = asyncio.Event()
        self._room.set()

    def start(self, offset: int) -> None:
        """From now on, bytes from `offset` on live here instead of in the temp file."""
        self.active = True
        self.base = self.end = offset

    def join(self) -> int:
        """Register a reader at offset 0; returns its id (see `leave`)."""
        self._next_reader += 1
        self._positions[self._next_reader] = 0
        return self._next_reader

    @property
    def readers(self) -> int:
        return len(self._positions)

    def leave(self, reader: int) -> None:
        self._positions.pop(reader, None)
        self._trim()

    async def put(self, chunk: bytes, deadline: float | None = None) -> None:
        """Hold `chunk` once the slowest reader is close enough; raises TimeoutError when
        that has not happened by `deadline` (event loop time; None: wait as long as it takes)."""
        while self._positions and self.end - self._slowest() > LIMIT:
            self._room.clear()
            async with asyncio.timeout_at(deadline):
                await self._room.wait()
        self._chunks.append(chunk)
        self.end += len(chunk)
        if not self._positions:
            self._trim()  # nobody will read it

    def read(self, offset: int) -> bytes:
        """Bytes from `offset` on (up to one chunk); empty when none are held yet."""
        position = self.base
        for chunk in self._chunks:
            if offset < position + len(chunk):
                return chunk[offset - position :]
            position += len(chunk)
        return b""

    def advance(self, reader: int, offset: int) -> None:
        self._positions[reader] = offset
        self._trim()

    def _slowest(self) -> int:
        return min(self._positions.values(), default=self.end)

    def _trim(self) -> None:
        slowest = self._slowest()
        while self._chunks and self.base + len(self._chunks[0]) <= slowest:
            released = self._chunks.popleft()
            self.base += len(released)
            self.dropped += len(released)
        self._room.set()
