"""RFC 9112 §6.3 on the origin side: aiohttp's own response parser, behind the pooled
connection's protocol, is given exactly one response; bytes past its Content-Length are
dropped and the connection is marked to close. Each row is fed whole, in two pieces
around the body, and one byte at a time (how the bytes are cut into segments is the
network's choice, never the origin's)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.origins.pool import _IdleGuardedProtocol

OK5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _pieces(data: bytes, split: str) -> list[bytes]:
    if split == "whole":
        return [data]
    if split == "at-body":
        at = data.index(b"\r\n\r\n") + 4
        return [data[:at], data[at:]]
    return [data[i : i + 1] for i in range(len(data))]


async def _exchange(data: bytes, split: str, *, head: bool = False) -> tuple[int, bytes, bool]:
    """The final status and body aiohttp reads from `data`, and whether the connection is
    then closed rather than reused."""
    protocol = _IdleGuardedProtocol(loop=asyncio.get_running_loop())
    protocol.connection_made(_Transport())
    protocol.set_response_params(skip_payload=head)
    for piece in _pieces(data, split):
        protocol.data_received(piece)
    while True:
        message, payload = await protocol.read()
        if not 100 <= message.code < 200:
            break
    body = await payload.read() if not head else b""
    return message.code, body, protocol.should_close


SPLITS = ["whole", "at-body", "bytewise"]

# (response bytes, body a client gets, connection dropped, rule)
EXACT_LENGTH = [
    (OK5 + b"hello", b"hello", False, "§6.3 (6): Content-Length bytes, then the message ends"),
    (OK5 + b"hello0123456789", b"hello", True, "§6.3: bytes past the length are not the body"),
    (OK5 + b"hello" + SMUGGLED, b"hello", True, "§6.3: a response nobody asked for is dropped"),
    (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK5 + b"helloXX",
        b"hello",
        True,
        "RFC 9110 §15.2: interim responses come first; the final one is counted",
    ),
    (
        b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc",
        b"",
        True,
        "§6.3 (1): a 204 ends with its head whatever it declares",
    ),
    (
        b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
        b"",
        True,
        "RFC 9110 §15.3.5: a 204 that declares content may send it late, as the next answer",
    ),
    (
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"",
        False,
        "RFC 9110 §15.3.5: a 204 without content keeps its connection",
    ),
    (
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        b"",
        False,
        "RFC 9110 §8.6: a 304 may give the length a 200 would have had",
    ),
    (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"hello",
        False,
        "§6.3 (4): chunked framing is the parser's alone",
    ),
]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(("data", "body", "dropped", "rule"), EXACT_LENGTH)
async def test_rfc9112_6_3_a_response_is_exactly_its_length(
    data: bytes, body: bytes, dropped: bool, rule: str, split: str
) -> None:
    status, got, closes = await _exchange(data, split)
    assert got == body, rule
    assert closes is dropped, rule
    assert status in (200, 204, 304), rule


@pytest.mark.parametrize("split", SPLITS)
async def test_rfc9112_6_3_a_head_response_has_no_body_whatever_follows(split: str) -> None:
    """§6.3 (1): the response to HEAD ends with its head; bytes after it are not a body."""
    status, _, closes = await _exchange(OK5 + b"hello", split, head=True)
    assert status == 200 and closes


@pytest.mark.parametrize("split", ["whole", "at-body"])
async def test_a_body_larger_than_the_readers_buffer_still_arrives_whole(split: str) -> None:
    """aiohttp pauses its parser while the body's reader is full and resumes it with an
    empty feed once read: the bytes it held must then still come, up to the length."""
    body = bytes(range(256)) * 8192  # 2 MiB: far past the reader's buffer
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body + b"EXTRA"
    async with asyncio.timeout(30):  # a parser never resumed would wait forever
        status, got, closes = await _exchange(data, split)
    assert status == 200 and got == body and closes
