"""The canonical objects: URLs whose correct bytes the fuzzer knows, served correctly by the
origin every time, so that any other bytes a client gets for them are pixcache's doing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.fake_origin import pattern_bytes

SAMPLES = Path(__file__).resolve().parents[2] / "proxy" / "samples"
# Sent by the origin on every response, so a client can tell which URL a response was for.
ORIGIN_PATH_FIELD = "X-Origin-Path"
LAST_MODIFIED = "Tue, 01 Oct 2024 10:00:00 GMT"


@dataclass(frozen=True)
class Canon:
    path: str
    body: bytes
    content_type: str

    @property
    def etag(self) -> str:
        return f'"{self.path.rsplit("/", 1)[1]}-v1"'


def _objects() -> dict[str, Canon]:
    found = [
        Canon("/canon/empty", b"", "application/octet-stream"),
        Canon("/canon/one", pattern_bytes(1, 9001), "application/octet-stream"),
        Canon("/canon/small", pattern_bytes(1_000, 9002), "application/octet-stream"),
        Canon("/canon/text", b"plain text, not an image\n" * 40, "text/plain; charset=utf-8"),
        Canon("/canon/chunky", pattern_bytes(70_013, 9003), "application/octet-stream"),
        Canon("/canon/large", pattern_bytes(300_007, 9004), "application/octet-stream"),
        Canon("/canon/photo.jpg", (SAMPLES / "gradient.jpg").read_bytes(), "image/jpeg"),
        Canon("/canon/tiny.webp", (SAMPLES / "gradient-small.webp").read_bytes(), "image/webp"),
    ]
    return {canon.path: canon for canon in found}


CANON = _objects()
CANON_PATHS = tuple(CANON)
# Only ever inside another request's body or a header value: neither the origin nor any
# response may ever see it as a request target (request smuggling, RFC 9112 §11.2).
SMUGGLED_PATH = "/canon/smuggled"


def canon_response(path: str, method: str, if_none_match: str | None) -> bytes:
    """The origin's answer for a canonical path: always well-formed, always the same bytes."""
    canon = CANON.get(path)
    if canon is None or method not in ("GET", "HEAD"):
        status = "405 Method Not Allowed" if canon is not None else "404 Not Found"
        body = status.encode() + b"\n"
        return (
            f"HTTP/1.1 {status}\r\n{ORIGIN_PATH_FIELD}: {path}\r\n"
            f"Allow: GET, HEAD\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + (body if method != "HEAD" else b"")
    fields = (
        f"{ORIGIN_PATH_FIELD}: {path}\r\nCache-Control: public, max-age=3600\r\n"
        f"ETag: {canon.etag}\r\nLast-Modified: {LAST_MODIFIED}\r\n"
    )
    if if_none_match is not None and canon.etag in if_none_match:
        return f"HTTP/1.1 304 Not Modified\r\n{fields}\r\n".encode()
    head = (
        f"HTTP/1.1 200 OK\r\n{fields}Content-Type: {canon.content_type}\r\n"
        f"Content-Length: {len(canon.body)}\r\n\r\n"
    ).encode()
    return head + (canon.body if method != "HEAD" else b"")
