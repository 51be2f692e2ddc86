"""An origin on raw sockets that sends bodies as fast as the connection takes them, or at a
set pace, and counts what it sent.

Framings: "chunked" and "close" (no length: the body ends when the connection closes) send
an endless body; "length" declares `size` bytes and sends them (`extra` bytes more, past the
declared length, when asked to). A test can see how many body bytes left the origin and
whether every connection to it has ended, so it can tell whether a fetch really stopped.
Binds 127.0.0.1 only; every body ends after `max_seconds` whatever its framing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from tests.fake_origin import pattern_bytes

FRAMINGS = frozenset({"chunked", "close", "length"})
BLOCK = 64 * 1024


@dataclass
class FastOrigin:
    framing: str = "chunked"
    size: int = 0  # "length": the declared (and sent) body length
    overrun: int = 0  # "length": bytes sent past the declared length
    pace: float = 0.0  # seconds between blocks; 0 sends as fast as the peer takes them
    header_delay: float = 0.0  # seconds between the request and the response head
    max_seconds: float = 30.0
    headers: bytes = (
        b"Cache-Control: public, max-age=600\r\nContent-Type: application/octet-stream\r\n"
    )
    sent: int = 0  # body bytes written, over all connections
    requests: int = 0
    open_connections: int = 0
    cut_by_peer: int = 0  # bodies that ended because the peer went away
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {sorted(FRAMINGS)}")

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _head(self) -> bytes:
        if self.framing == "chunked":
            framing = b"Transfer-Encoding: chunked\r\n"
        elif self.framing == "close":
            framing = b"Connection: close\r\n"
        else:
            framing = b"Content-Length: %d\r\n" % self.size
        return b"HTTP/1.1 200 OK\r\n" + self.headers + framing + b"\r\n"

    def _blocks(self) -> tuple[bytes, int]:
        """The bytes written per block and how many of them are body bytes."""
        data = pattern_bytes(BLOCK, seed=11)
        if self.framing == "chunked":
            return b"%x\r\n" % len(data) + data + b"\r\n", len(data)
        return data, len(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.open_connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            if self.header_delay:
                await asyncio.sleep(self.header_delay)
            writer.write(self._head())
            await self._send_body(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.cut_by_peer += 1
        except TimeoutError:
            pass  # max_seconds ran out while the peer took nothing
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)
            writer.close()

    async def _send_body(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + self.max_seconds
        block, body_bytes = self._blocks()
        left = self.size + self.overrun if self.framing == "length" else None
        while loop.time() < stop_at and (left is None or left > 0):
            if writer.transport.is_closing():
                raise ConnectionResetError("the peer went away")
            data = block if left is None else block[: min(left, len(block))]
            writer.write(data)
            async with asyncio.timeout_at(stop_at):
                await writer.drain()
            if left is not None:
                left -= len(data)
            self.sent += body_bytes if left is None else len(data)
            if self.pace:
                await asyncio.sleep(self.pace)
