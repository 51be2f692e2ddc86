"""A fake image origin for tests and benchmarks: a real HTTP server on loopback with fault modes.

The proxy's deadlines and completeness checks can only be proven against an origin that really
stalls, trickles, truncates or resets, so every fault here happens on a real socket. Everything
binds to 127.0.0.1 and nothing else: a test helper must never be reachable from the network.

Run as a process (benchmarks, system tests):
    python -m tests.fake_origin --port 0 --gen /big.jpg=1G:7 --delay 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import functools
import random
import signal
import socket
import ssl
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiohttp import web
from multidict import CIMultiDict

from tests.clock import FakeClock

# trustme (and cryptography with it) is imported for a TLS origin only: otherwise it took
# a tenth of a second of every start of the origin process.
if TYPE_CHECKING:
    import trustme

HOST = "127.0.0.1"
CHUNK_SIZE = 64 * 1024
MODES = frozenset({"normal", "trickle", "pause", "short", "chunked_truncated", "reset"})
# Headers that describe the framing of one message; they must not be copied onto a 304.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
# The pattern is a window into a per-seed random buffer; the buffer length is deliberately not
# a multiple of CHUNK_SIZE and the stride is odd, so consecutive chunks never repeat and a body
# shifted, truncated or spliced by a whole chunk does not compare equal.
_PATTERN_PERIOD = 256 * 1024 + 13
_PATTERN_STRIDE = 40_503


@functools.lru_cache(maxsize=32)
def _pattern_buffer(seed: int) -> bytes:
    # Seeded with a str so Random hashes it with SHA-512: the same bytes in every process
    # (an int seed would map -s and s to the same stream). Doubled so any window is one slice.
    base = random.Random(f"pixcache-pattern:{seed}").randbytes(_PATTERN_PERIOD)
    return base + base


def _pattern_chunks(seed: int, start: int, end: int) -> Iterator[memoryview]:
    """Yield pattern bytes [start, end) as zero-copy slices, at most one chunk at a time."""
    buf = memoryview(_pattern_buffer(seed))
    pos = start
    while pos < end:
        index, inner = divmod(pos, CHUNK_SIZE)
        take = min(CHUNK_SIZE - inner, end - pos)
        window = (index * _PATTERN_STRIDE) % _PATTERN_PERIOD + inner
        yield buf[window : window + take]
        pos += take


def pattern_bytes(size: int, seed: int = 0, offset: int = 0) -> bytes:
    """Deterministic bytes for generated bodies (cheap to compute, differs per seed).

    pattern_bytes(size, seed) is the full body; pattern_bytes(n, seed, offset) is the slice
    [offset, offset + n) of any body generated with that seed.
    """
    if size < 0 or offset < 0:
        raise ValueError("size and offset must be >= 0")
    return b"".join(_pattern_chunks(seed, offset, offset + size))


@dataclass
class Obj:
    """One object the origin serves, and how it misbehaves while serving it."""

    body: bytes | None = None  # literal body
    size: int | None = None  # OR generated body: pattern_bytes(size, seed), streamed in chunks
    seed: int = 0
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    header_delay: float = 0.0  # sleep before sending the response headers
    mode: str = "normal"  # one of MODES
    chunked: bool = False  # no Content-Length: chunked transfer encoding
    trickle_interval: float = 0.05
    pause_seconds: float = 30.0
    chunk_interval: float = 0.0  # sleep between body chunks: a slow but steady origin

    def __post_init__(self) -> None:
        # Fail at setup, not as a confusing response in the middle of a test.
        if self.body is not None and self.size is not None:
            raise ValueError("Obj takes body or size, not both")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {sorted(MODES)}")

    @property
    def length(self) -> int:
        if self.size is not None:
            return self.size
        return len(self.body or b"")

    def chunks(self, start: int, end: int) -> Iterator[bytes | memoryview]:
        """Body bytes [start, end) in pieces of at most CHUNK_SIZE; never the whole body."""
        if self.size is not None:
            yield from _pattern_chunks(self.seed, start, end)
            return
        view = memoryview(self.body or b"")
        for pos in range(start, end, CHUNK_SIZE):
            yield view[pos : min(pos + CHUNK_SIZE, end)]


class RequestHeaders(dict[str, str]):
    """The headers of a recorded request, looked up case-insensitively (RFC 9110 §5.1).

    Names are stored lower-cased, so a test passes whatever case the proxy happens to send.
    """

    def __init__(self, items: Any = ()) -> None:
        super().__init__((k.lower(), v) for k, v in dict(items).items())

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    # RFC 9110 §13.1.2: If-None-Match uses the weak comparison (§8.8.3.2), "*" matches any.
    def opaque(tag: str) -> str:
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag

    candidates = [opaque(t) for t in if_none_match.split(",")]
    return "*" in candidates or opaque(etag) in candidates


def _not_modified(request: web.BaseRequest, obj: Obj) -> bool:
    # RFC 9110 §13.2.1: conditions only apply where the response would otherwise be a 2xx.
    if request.method not in ("GET", "HEAD") or not 200 <= obj.status < 300:
        return False
    headers = CIMultiDict(obj.headers)
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        # RFC 9110 §13.2.2: If-None-Match is evaluated instead of If-Modified-Since.
        etag = headers.get("ETag")
        return etag is not None and _etag_matches(if_none_match, etag)
    last_modified = headers.get("Last-Modified")
    # Exact string equality is enough for a fake; we never parse dates.
    return last_modified is not None and request.headers.get("If-Modified-Since") == last_modified


def _has_no_body(method: str, status: int) -> bool:
    # RFC 9110 §6.4.1: HEAD, 1xx, 204 and 304 responses never carry content.
    return method == "HEAD" or status in (204, 304) or 100 <= status < 200


async def _flush(transport: asyncio.BaseTransport) -> None:
    # An RST discards unsent data, so wait until asyncio has handed every byte to the kernel;
    # on loopback the kernel then delivers it before the RST (bounded in case the peer stalls).
    for _ in range(200):
        if not isinstance(transport, asyncio.WriteTransport):
            return
        if transport.is_closing() or transport.get_write_buffer_size() == 0:
            return
        await asyncio.sleep(0.01)


def _close_connection(request: web.BaseRequest, *, reset: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    if reset:
        # SO_LINGER with a zero timeout turns close() into an RST instead of a FIN.
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()  # flushes what was written, then FIN (close_notify first under TLS)


class FakeOrigin:
    """An aiohttp origin on 127.0.0.1 serving `objects` by path, recording every request."""

    def __init__(self, *, tls: bool = False, clock: FakeClock | None = None) -> None:
        self.tls = tls
        # Date comes from this clock when given: a proxy on the same clock then computes
        # the ages it would in production, however far a test moved the time.
        self.clock = clock
        self.objects: dict[str, Obj] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._ca: trustme.CA | None = None
        if tls:
            import trustme

            self._ca = trustme.CA()
        self._runner: web.ServerRunner | None = None
        self._port: int | None = None

    def add(self, path: str, obj: Obj | bytes | None = None, **kw: Any) -> Obj:
        """Serve obj (an Obj, or a literal body) at path; keyword arguments set Obj fields."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        if isinstance(obj, Obj):
            obj = dataclasses.replace(obj, **kw) if kw else obj
        else:
            obj = Obj(body=obj, **kw) if obj is not None else Obj(**kw)
        self.objects[path] = obj
        return obj

    @property
    def ca(self) -> trustme.CA:
        if self._ca is None:
            raise RuntimeError("FakeOrigin(tls=True) is needed for a CA")
        return self._ca

    def ssl_client_context(self) -> ssl.SSLContext:
        """A client context that trusts this origin's certificate (and verifies it)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeOrigin is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    async def start(self, port: int = 0) -> None:
        server_ssl = None
        if self._ca is not None:
            server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ca.issue_cert(HOST, "localhost").configure_cert(server_ssl)
        # handler_cancellation: a client that gives up must not leave a 30 s pause running;
        # short shutdown_timeout: stop() is called by fixtures and must not wait on stalls.
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=0.25)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, port, ssl_context=server_ssl)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        obj = self.objects.get(path)
        if path == "/_hits" and obj is None:
            # Control endpoint for other processes; not counted, so it never skews the counts.
            return web.json_response(dict(self.hits))
        # Counted on arrival, before any delay, so a test can see a request that is still stalled.
        self.hits[path] += 1
        # raw_path is the target exactly as sent, so tests see what the proxy really forwarded.
        self.requests.append((request.method, request.raw_path, RequestHeaders(request.headers)))
        # Read any request body so closing the socket later sends FIN, not an RST for unread data.
        while await request.content.readany():
            pass
        if obj is None:
            if request.method in ("GET", "HEAD"):
                return web.Response(status=404, text=f"not found: {path}\n")
            return web.Response(text="ok")
        if obj.header_delay > 0:
            await asyncio.sleep(obj.header_delay)
        if _not_modified(request, obj):
            headers = {k: v for k, v in obj.headers.items() if k.lower() not in _FRAMING_HEADERS}
            return web.Response(status=304, headers=self._dated(headers))
        return await self._send(request, obj)

    def _dated(self, headers: dict[str, str]) -> CIMultiDict[str]:
        dated = CIMultiDict(headers)
        if self.clock is not None:
            dated.setdefault("Date", self.clock.http_date())
        return dated

    async def _send(self, request: web.BaseRequest, obj: Obj) -> web.StreamResponse:
        resp = web.StreamResponse(status=obj.status, headers=self._dated(obj.headers))
        length = obj.length
        if obj.chunked or obj.mode == "chunked_truncated":
            resp.enable_chunked_encoding()
        else:
            resp.content_length = length
        await resp.prepare(request)
        if _has_no_body(request.method, obj.status):
            await resp.write_eof()
            return resp
        if obj.mode != "normal":
            # aiohttp holds the headers back to coalesce them with the body; a fault mode must
            # put them on the wire now, even when the part sent before the fault is empty.
            send_headers = getattr(request.writer, "send_headers", None)
            if send_headers is not None:
                send_headers()
        half = length // 2
        if obj.mode == "normal":
            await self._write(resp, obj, 0, length)
        elif obj.mode == "trickle":
            for pos in range(length):
                if pos:
                    await asyncio.sleep(obj.trickle_interval)
                await self._write(resp, obj, pos, pos + 1)
        elif obj.mode == "pause":
            await self._write(resp, obj, 0, half)
            await asyncio.sleep(obj.pause_seconds)
            await self._write(resp, obj, half, length)
        else:  # short, chunked_truncated, reset: half the body, then break the connection
            await self._write(resp, obj, 0, half)
            if request.transport is not None:
                await _flush(request.transport)
            _close_connection(request, reset=obj.mode == "reset")
            # aiohttp now finds the transport closing and treats it as a client disconnect:
            # nothing more is written (no chunked terminator) and nothing is logged.
            return resp
        await resp.write_eof()
        return resp

    @staticmethod
    async def _write(resp: web.StreamResponse, obj: Obj, start: int, end: int) -> None:
        # One chunk at a time; write() waits for the transport to drain, so memory stays flat.
        for chunk in obj.chunks(start, end):
            await resp.write(chunk)
            if obj.chunk_interval:
                await asyncio.sleep(obj.chunk_interval)


class BlackholeServer:
    """A TCP port on 127.0.0.1 whose connect() never completes.

    A listening socket with backlog 0 that never accepts. Linux lets one connection into the
    accept queue of such a socket and drops every further SYN while the queue is full, so we
    fill it with our own connections until one of them stalls; a client's SYNs (and the
    retransmissions) are then dropped and its connect() hangs until its own deadline.
    """

    def __init__(self) -> None:
        self._listener: socket.socket | None = None
        self._fillers: list[socket.socket] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((HOST, 0))
        listener.listen(0)
        self._listener = listener
        self.port = listener.getsockname()[1]
        # The queue size for backlog 0 is kernel-dependent, so fill until a connect stalls;
        # that stall is the proof that the next client's connect will stall too.
        for _ in range(16):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            self._fillers.append(filler)
            try:
                await asyncio.wait_for(loop.sock_connect(filler, (HOST, self.port)), 0.1)
            except TimeoutError:
                return
        await self.stop()
        raise RuntimeError("could not fill the accept queue; connect would not stall")

    async def stop(self) -> None:
        for sock in [*self._fillers, *([self._listener] if self._listener else [])]:
            sock.close()
        self._fillers.clear()
        self._listener = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class SilentTLSServer:
    """Accepts TCP on 127.0.0.1 and then says nothing, ever: an https client stalls in the
    TLS handshake, waiting for a ServerHello that never comes."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Read and discard the ClientHello so the client is never blocked on a full buffer.
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        try:
            while await reader.read(CHUNK_SIZE):
                pass
        except OSError:
            pass
        finally:
            self._connections.pop(writer, None)
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._swallow, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        # Close open connections first: from Python 3.12 wait_closed() waits for them. Then let
        # their tasks end on EOF; a task cancelled at loop shutdown would log an asyncio error.
        connections = list(self._connections.items())
        for writer, _ in connections:
            writer.close()
        await asyncio.gather(*(task for _, task in connections), return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _parse_size(text: str) -> int:
    # Binary suffixes so a benchmark can say 1G instead of 1073741824.
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def _parse_gen(spec: str) -> tuple[str, int, int]:
    path, sep, rest = spec.partition("=")
    if not sep or not path.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected PATH=SIZE[:SEED], got {spec!r}")
    size, _, seed = rest.partition(":")
    try:
        return path, _parse_size(size), int(seed or 0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad size or seed in {spec!r}") from exc


async def _serve(args: argparse.Namespace) -> None:
    origin = FakeOrigin()
    for path, size, seed in args.gen:
        headers = {
            "Cache-Control": args.cache_control,
            "ETag": f'"gen-{size}-{seed}"',
            "Content-Type": "application/octet-stream",
        }
        origin.add(
            path,
            size=size,
            seed=seed,
            headers=headers,
            header_delay=args.delay,
            chunk_interval=args.chunk_interval,
        )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await origin.start(args.port)
    try:
        print(f"READY {origin.port}", flush=True)
        await stopping.wait()
    finally:
        await origin.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_origin", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument(
        "--gen",
        type=_parse_gen,
        action="append",
        default=[],
        metavar="PATH=SIZE[:SEED]",
        help="serve pattern_bytes(SIZE, SEED)",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="header delay, seconds")
    parser.add_argument("--cache-control", default="max-age=3600")
    parser.add_argument(
        "--chunk-interval", type=float, default=0.0, help="seconds between body chunks"
    )
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
