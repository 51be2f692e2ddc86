"""Raw HTTP/1.1 exchanges with pixcache, for bytes no well-behaved client library sends."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


def field_of(head: bytes, name: bytes) -> bytes | None:
    """The value of the first field called `name` in a raw message head."""
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


@dataclass
class RawResponse:
    status: int
    head: bytes
    body: bytes

    def field(self, name: bytes) -> bytes | None:
        return field_of(self.head, name)


async def exchange(port: int, request: bytes, timeout: float = 10) -> RawResponse:
    """Send `request` (which should ask for `Connection: close`) and read the response to the
    end of the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            data = await reader.read(-1)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 1"):  # an interim response (100 Continue) comes first
        head, _, body = body.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0
    return RawResponse(status, head, body)
