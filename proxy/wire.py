"""Header bytes pixcache relays are the bytes it received.

RFC 9110 §5.5 allows obs-text (octets 0x80-0xFF) in field values and asks recipients to
treat it as opaque. aiohttp's parsers decode field values as UTF-8 with `surrogateescape`,
so such octets survive parsing as lone surrogates, but its C header writer drops lone
surrogates: a Latin-1 filename in Content-Disposition, or a client's non-ASCII field,
lost bytes on the way through. Values that are not pure ASCII are therefore written by
encoding with `surrogateescape` again, which gives back exactly the octets that arrived;
everything else keeps aiohttp's own (faster) writer. Control characters are refused by
aiohttp's check as before (no header injection)."""

from __future__ import annotations

from aiohttp import http_writer
from multidict import CIMultiDict

_ascii_writer = http_writer._serialize_headers


def _serialize_headers(status_line: str, headers: CIMultiDict[str]) -> bytes:
    if status_line.isascii() and all(n.isascii() and v.isascii() for n, v in headers.items()):
        return _ascii_writer(status_line, headers)
    safe = http_writer._safe_header
    lines = [safe(status_line)]
    lines.extend(f"{safe(name)}: {safe(value)}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def keep_header_octets() -> None:
    """Install the writer above for every aiohttp connection of this process (idempotent)."""
    http_writer._serialize_headers = _serialize_headers  # type: ignore[assignment]
