"""Strict HTTP/1.1 readers for the fuzzer: responses as pixcache sends them to a client, and
requests as pixcache sends them to the origin. Whatever does not follow RFC 9112 exactly is
`Malformed`: pixcache must never emit it, whatever it was fed."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) [\t \x21-\x7e\x80-\xff]*")
# RFC 9112 §3: request-line = method SP request-target SP HTTP-version
REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/1\.[01]")
# RFC 9110 §5.1, §5.5: field-name is a token; a value has no CR, LF or NUL.
FIELD_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n\x00]*?)[ \t]*")
MAX_HEAD = 256 * 1024
MAX_BODY = 64 * 1024 * 1024


class Malformed(Exception):
    """The peer sent something that is not an HTTP/1.1 message."""


@dataclass
class Message:
    start: bytes  # the status line or request line
    fields: list[tuple[str, str]]
    body: bytes = b""
    complete: bool = True  # False: the connection ended before the framing said it would
    chunked: bool = False
    status: int = 0
    method: str = ""
    target: str = ""
    raw_head: bytes = b""
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before this one

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.fields if key == lowered]


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The header block up to and including its empty line; None on EOF before any byte."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise Malformed(f"connection ended inside a header block: {exc.partial[:120]!r}") from exc
    except asyncio.LimitOverrunError as exc:
        raise Malformed("header block larger than the reader's limit") from exc


def _split_head(head: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    lines = head[:-4].split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line or b"\x00" in line:
            raise Malformed(f"bare CR, LF or NUL in a header line: {line[:120]!r}")
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        match = FIELD_LINE.fullmatch(line)
        if match is None:  # obs-fold, a space before the colon, no colon: RFC 9112 §5
            raise Malformed(f"not a field line: {line[:120]!r}")
        fields.append((match[1].decode().lower(), match[2].decode("latin-1")))
    return lines[0], fields


def _content_length(fields: list[tuple[str, str]]) -> int | None:
    values = [value for key, value in fields if key == "content-length"]
    if not values:
        return None
    # RFC 9110 §8.6: one decimal number; a list of identical numbers may be folded to one.
    numbers = {item.strip() for value in values for item in value.split(",")}
    if len(numbers) != 1 or not next(iter(numbers)).isdigit():
        raise Malformed(f"Content-Length {values!r}")
    return int(numbers.pop())


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    """RFC 9112 §7.1; (body, complete): a body cut anywhere is what arrived of its data.
    Trailer fields are read and dropped."""
    parts: list[bytes] = []
    total = 0
    try:
        while True:
            try:
                size_line = (await reader.readuntil(b"\r\n"))[:-2]
            except asyncio.IncompleteReadError:
                return b"".join(parts), False
            size_text = size_line.split(b";", 1)[0]
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
                raise Malformed(f"chunk size line {size_line[:80]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise Malformed(f"chunked body over {limit} bytes")
            try:
                parts.append(await reader.readexactly(size))
            except asyncio.IncompleteReadError as exc:
                return b"".join([*parts, exc.partial]), False
            try:
                if await reader.readexactly(2) != b"\r\n":
                    raise Malformed("chunk data not followed by CRLF")
            except asyncio.IncompleteReadError:
                return b"".join(parts), False
        while (await reader.readuntil(b"\r\n")) != b"\r\n":
            pass  # a trailer field
    except asyncio.LimitOverrunError as exc:
        raise Malformed("chunk size or trailer line too long") from exc
    except asyncio.IncompleteReadError:
        return b"".join(parts), False  # cut inside the trailer section
    return b"".join(parts), True


async def _read_to_length(reader: asyncio.StreamReader, length: int) -> tuple[bytes, bool]:
    try:
        return await reader.readexactly(length), True
    except asyncio.IncompleteReadError as exc:
        return exc.partial, False


async def _read_body(
    reader: asyncio.StreamReader, fields: list[tuple[str, str]], *, until_close: bool
) -> tuple[bytes, bool, bool]:
    """(body, complete, chunked) by RFC 9112 §6.3."""
    codings = [
        v.strip().lower()
        for k, value in fields
        if k == "transfer-encoding"
        for v in value.split(",")
    ]
    if codings:
        if codings[-1] != "chunked":
            raise Malformed(f"Transfer-Encoding {codings!r} does not end in chunked")
        if any(k == "content-length" for k, _ in fields):
            raise Malformed("both Transfer-Encoding and Content-Length")  # RFC 9112 §6.1
        body, complete = await _read_chunked(reader, MAX_BODY)
        return body, complete, True
    length = _content_length(fields)
    if length is not None:
        if length > MAX_BODY:
            raise Malformed(f"Content-Length {length} over the reader's limit")
        body, complete = await _read_to_length(reader, length)
        return body, complete, False
    if not until_close:
        return b"", True, False  # a request without framing fields has no content
    body = await reader.read(MAX_BODY)
    while chunk := await reader.read(MAX_BODY):
        body += chunk
        if len(body) > MAX_BODY:
            raise Malformed("body until close over the reader's limit")
    return body, True, False


async def read_response(reader: asyncio.StreamReader, method: str) -> Message | None:
    """The next final response to a request with `method`; None on EOF before any byte."""
    interim: list[int] = []
    while True:
        head = await _read_head(reader)
        if head is None:
            if interim:
                raise Malformed("connection ended after an interim response")
            return None
        start, fields = _split_head(head)
        match = STATUS_LINE.fullmatch(start)
        if match is None:
            raise Malformed(f"status line {start[:120]!r}")
        status = int(match[1])
        if status >= 200:
            break
        if status == 101:
            raise Malformed("101 Switching Protocols to a request that asked for no upgrade")
        interim.append(status)
    message = Message(start, fields, status=status, raw_head=head, interim=interim)
    # RFC 9112 §6.3 (1): HEAD, 1xx, 204 and 304 responses end at their header block.
    if method == "HEAD" or status in (204, 304):
        return message
    message.body, message.complete, message.chunked = await _read_body(
        reader, fields, until_close=True
    )
    return message


async def read_request(reader: asyncio.StreamReader) -> Message | None:
    """The next request on a connection; None on EOF before any byte."""
    head = await _read_head(reader)
    if head is None:
        return None
    start, fields = _split_head(head)
    match = REQUEST_LINE.fullmatch(start)
    if match is None:
        raise Malformed(f"request line {start[:120]!r}")
    message = Message(start, fields, method=match[1].decode(), target=match[2].decode("latin-1"))
    message.raw_head = head
    message.body, message.complete, message.chunked = await _read_body(
        reader, fields, until_close=False
    )
    return message  # complete is False when the sender closed inside the body
