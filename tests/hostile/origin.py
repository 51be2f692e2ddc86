"""A hostile origin on a raw asyncio TCP server: it answers canonical paths correctly, /o/N
with origin case N (malformed framing, garbage status lines, huge or injected headers, early
closes, unasked responses, pixel floods), and /u/N like an origin that builds its answer from
unkeyed request fields. It records what reached it that never should have."""

from __future__ import annotations

import asyncio
import functools
import re
import socket
from collections import Counter

from tests.hostile.canon import ORIGIN_PATH_FIELD, SMUGGLED_PATH, canon_response
from tests.hostile.origin_cases import OriginCase, origin_case, origin_number
from tests.hostile.parse import Malformed, Message, read_request
from tests.hostile.vocab import UNKEYED_NAMES

UNKEYED_PREFIX = "/u/"
# A request that reaches the origin this soon after an unasked response crossed it.
CROSSING_SECONDS = 0.002


def clean_body(path: str) -> bytes:
    return f"clean answer for {path}\n".encode()


def poisoned_body(path: str) -> bytes:
    return f"EVIL answer for {path}, built from an unkeyed field\n".encode()


def path_of(target: str) -> str:
    return target.split("?", 1)[0]


class Trap:
    """A loopback port that appears in targets, Host and Location fields: pixcache never takes
    the origin from a request or follows a redirect, so nothing may ever connect here."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def _request_waiting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Bytes of a next request already read into the stream, or waiting in the kernel."""
    if reader._buffer:  # noqa: SLF001 - a test origin may look at its own buffer
        return True
    fd = writer.get_extra_info("socket").fileno()
    if fd < 0:  # the connection is closed already: no request can follow on it
        return False
    peek = socket.socket(fileno=fd)
    try:
        return bool(peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False
    finally:
        peek.detach()


class HostileOrigin:
    def __init__(self, seed: str, trap_port: int) -> None:
        self.seed = seed
        self.trap_port = trap_port
        self.port = 0
        self.served: Counter[str] = Counter()  # origin cases answered, by kind
        self.hostile_served = 0
        self.requests = 0
        self.unkeyed_seen = 0  # requests that arrived with an unkeyed field
        self.findings: list[str] = []
        self.unasked_withheld = 0  # unasked responses not sent: a request was waiting
        self.unasked_crossed: set[int] = set()  # sent as the next request was (see _answer)
        # Connection -> the exchange whose unasked response crossed the next request: from
        # there on, each answer on it is read by the request after its own (see
        # shifted_by_crossing).
        self.crossed_on: dict[int, int] = {}
        # Connection -> how many requests it had read when it closed.
        self.exchanges_on: dict[int, int] = {}
        # Where each path was asked for: (connection number, its nth request, method), to
        # tell, when a response answers the wrong request, whether both shared a connection.
        self.asked: dict[str, list[tuple[int, int, str]]] = {}
        self._connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - lives as long as the run
    def case(self, number: int) -> OriginCase:
        return origin_case(self.seed, number, self.trap_port)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    def shifted_by_crossing(self, answered: str, asked: str) -> bool:
        """Whether `answered`'s response reaching the request for `asked` is what a crossing
        leaves behind: the two were asked one after the other on a connection where an
        unasked response had crossed a request, so every answer on it came one request
        late (as any HTTP/1.1 client reads them) until it closed."""
        late = [
            (connection, exchange)
            for connection, exchange, _ in self.asked.get(answered, [])
            # The request after `crossed` read the unasked bytes; each one after that, the
            # answer to the one before it.
            if (crossed := self.crossed_on.get(connection)) is not None and crossed < exchange
        ]
        for connection, exchange, _ in self.asked.get(asked, []):
            if (connection, exchange - 1) in late:
                return True
        # `asked` never reached us: it went out on the crossed connection after `answered`,
        # whose case closed the connection before reading it (the late answer was read
        # all the same).
        return not self.asked.get(asked) and any(
            self.exchanges_on.get(connection) == exchange for connection, exchange in late
        )

    def where_asked(self, text: str) -> str:
        """The paths a violation names, each with where the origin was asked for it."""
        paths = dict.fromkeys(re.findall(r"/[ou]/\d+|/canon\S*", text))
        return "; ".join(f"{p} asked on {self.asked.get(p, [])[:6]}" for p in paths)

    def _finding(self, text: str) -> None:
        if len(self.findings) < 1000:
            self.findings.append(text)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self._connections += 1
        connection, exchanges = self._connections, 0
        try:
            while True:
                try:
                    request = await read_request(reader)
                except Malformed as exc:
                    self._finding(f"origin received a malformed request: {exc}")
                    return
                if request is None or not request.complete:
                    return  # closed, or closed inside a body: the sender gave the request up
                self.requests += 1
                exchanges += 1
                where = (connection, exchanges, request.method)
                self.asked.setdefault(path_of(request.target), []).append(where)
                self._inspect(request)
                if await self._answer(request, reader, writer, where):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.exchanges_on[connection] = exchanges
            self._writers.discard(writer)
            writer.close()

    def _inspect(self, request: Message) -> None:
        """What must never reach an origin (invariants 6 and 7)."""
        if SMUGGLED_PATH in request.target:
            self._finding(
                f"a request smuggled inside another reached the origin: {request.start!r}"
            )
        hosts = request.all("host")
        if hosts != [f"127.0.0.1:{self.port}"]:
            self._finding(f"the origin received Host {hosts!r}, not its configured address")
        if request.method in ("GET", "HEAD") and request.body:
            # An origin that ignores GET content reads these bytes as its next request.
            self._finding(
                f"{request.method} {request.target} reached the origin with "
                f"{len(request.body)} bytes of content: {request.body[:60]!r}"
            )
        if any(name in UNKEYED_NAMES for name, _ in request.fields):
            self.unkeyed_seen += 1

    async def _answer(
        self,
        request: Message,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        where: tuple[int, int, str],
    ) -> bool:
        """Write the answer to the request `where` says (connection, exchange, method)
        came as; True when the connection is to be closed."""
        path = path_of(request.target)
        number = origin_number(path)
        if number is not None and request.method == "GET":
            case = self.case(number)
            self.served[case.kind] += 1
            self.hostile_served += case.hostile
            for item in case.script:
                if isinstance(item, float):
                    await asyncio.sleep(item)  # the origin's own pacing
                elif case.kind == "unasked_response" and item is case.script[-1]:
                    # Unasked only while no next request waits; once one does, any client
                    # would take these bytes for its answer. Checked and written with no
                    # await between, so pixcache cannot send in between on loopback.
                    if _request_waiting(reader, writer):
                        self.unasked_withheld += 1
                    else:
                        writer.write(item)
                        await writer.drain()
                        # pixcache looks for unread bytes in the same step as it writes a
                        # request, but on two cores its look and write can both fall between
                        # our look and write above: then the request crossed these bytes on
                        # the wire, and no HTTP/1.1 client can tell them from its answer. A
                        # request that arrives this soon after them is such a crossing.
                        await asyncio.sleep(CROSSING_SECONDS)
                        if _request_waiting(reader, writer):
                            self.unasked_crossed.add(number)
                            self.crossed_on.setdefault(where[0], where[1])
                else:
                    writer.write(item)
                    await writer.drain()
            return case.close
        if path.startswith(UNKEYED_PREFIX) and request.method == "GET":
            # Like an origin that builds links from X-Forwarded-Host and the like: whoever
            # sends one changes the answer, so a shared fill must not forward them.
            unkeyed = any(name in UNKEYED_NAMES for name, _ in request.fields)
            body = poisoned_body(path) if unkeyed else clean_body(path)
            head = (
                f"HTTP/1.1 200 OK\r\n{ORIGIN_PATH_FIELD}: {path}\r\n"
                f"Cache-Control: public, max-age=3600\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
        else:
            writer.write(canon_response(path, request.method, request.get("if-none-match")))
        await writer.drain()
        return False
