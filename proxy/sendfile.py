"""Zero-copy body sending from a file descriptor to a client socket.

uvloop does not implement loop.sendfile(), and aiohttp falls back to reading the file in
chunks through a thread. We call os.sendfile() ourselves on a duplicate of the client socket:
it never blocks (the socket is non-blocking), and when the socket buffer is full we wait for
writability on the duplicate, which the event loop lets us watch because the transport owns
only the original descriptor number.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator

# The most one sendfile() call moves; bounds the time one call holds the event loop.
MAX_CALL_BYTES = 1 << 20


async def flush_transport(transport: asyncio.Transport) -> None:
    """Wait until everything written through the transport has reached the socket, so that
    bytes we send around it keep their order. The connection's send deadline runs while
    this waits (a client that stopped reading is cut, proxy/connections.py)."""
    if not transport.get_write_buffer_size():
        return
    with _send_deadline(transport) as arm:
        while transport.get_write_buffer_size():
            if transport.is_closing():
                raise ConnectionResetError("client connection closed")
            arm()  # again, should the transport have resumed meanwhile
            await asyncio.sleep(0.001)


async def send_range(transport: asyncio.Transport, fd: int, offset: int, count: int) -> None:
    """Send bytes [offset, offset + count) of `fd` to the client. Raises ConnectionError
    when the client goes away, and EOFError if the file is shorter than asked."""
    if count <= 0:
        return
    if transport.is_closing():
        raise ConnectionResetError("client connection closed")
    await flush_transport(transport)
    sock = transport.get_extra_info("socket")
    loop = asyncio.get_running_loop()
    out_fd = os.dup(sock.fileno())
    try:
        end = offset + count
        while offset < end:
            try:
                sent = os.sendfile(out_fd, fd, offset, min(end - offset, MAX_CALL_BYTES))
            except BlockingIOError:
                await _writable(loop, out_fd, transport)
                continue
            if sent == 0:
                raise EOFError("file ended before the range did")
            offset += sent
    finally:
        os.close(out_fd)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int, transport: asyncio.Transport) -> None:
    ready = loop.create_future()
    loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
    # The send deadline runs while the socket is full; the transport closing is checked
    # every second.
    try:
        with _send_deadline(transport) as arm:
            arm()
            while not ready.done():
                if transport.is_closing():
                    raise ConnectionResetError("client connection closed")
                await asyncio.wait([ready], timeout=1.0)
    finally:
        loop.remove_writer(fd)


@contextlib.contextmanager
def _send_deadline(transport: asyncio.Transport) -> Iterator[Callable[[], None]]:
    """The client connection's send deadline (proxy/connections.py cuts the connection when
    it passes), for a wait on a client that takes no bytes: `arm()` starts it, and it stops
    when the wait ends. Connections without one (aiohttp's own, in tests) get a no-op."""
    protocol = transport.get_protocol()
    stalled = getattr(protocol, "sending_stalled", None)
    if stalled is None:
        yield lambda: None
        return
    try:
        yield stalled
    finally:
        protocol.sending_resumed()  # type: ignore[attr-defined]
