"""A keep-alive HTTP/1.1 origin written on raw sockets, for the framing tests.

Like most servers, it answers a request as soon as its head has arrived and then discards
the request's content by its Content-Length before it reads the next request on the same
connection. That is exactly what makes a forwarded Content-Length without its body
dangerous: the origin then discards the start of the next request, sent by pixcache for
another client on the pooled connection. Every request head it parsed is kept, raw."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from tests.raw_client import field_of


@dataclass
class RawRequest:
    method: bytes
    target: bytes
    head: bytes  # the whole request head, as received

    def field(self, name: bytes) -> bytes | None:
        return field_of(self.head, name)


def body_for(target: bytes) -> bytes:
    """What the origin sends for a target: its name, so a mix-up shows in the bytes."""
    return b"object at " + target + b"\n"


@dataclass
class RawOrigin:
    # Extra header lines (raw bytes, each ending in CRLF) on every response.
    extra: bytes = b"Cache-Control: public, max-age=600\r\n"
    # Bytes sent after each body, beyond its Content-Length (in the same write).
    excess: bytes = b""
    # Requests answered on one connection; the next one it reads closes the connection
    # unanswered, as a server does whose keep-alive limit or idle timeout races a request.
    answers_per_connection: int | None = None
    requests: list[RawRequest] = field(default_factory=list)
    dropped: list[RawRequest] = field(default_factory=list)  # closed on, unanswered
    malformed: int = 0  # request heads it could not parse (a desynchronised connection)
    connections: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def paths(self) -> list[bytes]:
        return [r.target for r in self.requests]

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                parts = head.split(b"\r\n", 1)[0].split(b" ")
                if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                    self.malformed += 1
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    return
                request = RawRequest(parts[0], parts[1], head)
                if answered == self.answers_per_connection:
                    self.dropped.append(request)
                    return
                answered += 1
                self.requests.append(request)
                body = body_for(request.target)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + self.extra
                    + b"Content-Length: %d\r\n\r\n" % len(body)
                    + (b"" if request.method == b"HEAD" else body)
                    + self.excess
                )
                await writer.drain()
                length = request.field(b"content-length")
                if length is not None and length.isdigit():
                    await reader.readexactly(int(length))  # discard the content
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
