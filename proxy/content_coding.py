"""Reading through a response's content-coding (RFC 9110 §8.4.1), for the image guard: it
judges a gzip or deflate body by what it decodes to, as the body's client will decode it,
and bounds what that decoding may cost. Fills ask origins only for the codings read here."""

from __future__ import annotations

import zlib
from typing import Any

from proxy.errors import ImageRejected

# Content-codings the guard reads through (RFC 9110 §8.4.1): it judges the decoded bytes,
# as a client will see them, and passes on the bytes as the origin sent them.
READ_THROUGH = frozenset({"gzip", "x-gzip", "deflate"})
# Most decoded bytes taken at once: a small coded body may decode to a thousand times more.
DECODED_PIECE = 256 * 1024
# Past the look-ahead, a coded body may decode to at most this many times its size (an
# image is compressed already; gzip gains little on it): the frames of a GIF or WebP are
# counted in every decoded byte, and a bomb must not buy that work for nothing.
DECODED_RATIO = 32
# Each gzip member costs a decompressor: an origin sending empty members must not make the
# guard build one per 20 bytes.
MOST_GZIP_MEMBERS = 64
GZIP_MAGIC = b"\x1f\x8b"


def content_coding(headers: Any) -> str:
    """A response's content-codings as one lower-case list, every Content-Encoding line
    joined; '' for none (or identity)."""
    codings = ",".join(headers.getall("Content-Encoding", ()))
    coding = ", ".join(c.strip().lower() for c in codings.split(",") if c.strip())
    return "" if coding == "identity" else coding


def readable_codings(accept_encoding: str) -> str:
    """The codings of an Accept-Encoding value (empty: the client sent none) the guard can
    read through, q-values kept, or "identity" when none is left (RFC 9110 §12.5.3: no
    field at all would let the origin choose any). Asking only for these, a fill never gets
    a body it has to refuse; removing codings never makes the response unacceptable to the
    client that asked."""
    kept = [
        item.strip()
        for item in accept_encoding.split(",")
        if item.split(";")[0].strip().lower() in READ_THROUGH | {"identity"}
    ]
    return ", ".join(kept) or "identity"


class Decoding:
    """The decoded bytes of a gzip or deflate body, taken a bounded piece at a time, as the
    most lenient client decodes them: every member of a gzip body (zero bytes between them
    are padding, other bytes after one end it), a deflate body with or without its zlib
    wrapper. A body that does not decode, or that decodes to more than DECODED_RATIO times
    its size or has more than MOST_GZIP_MEMBERS members, is refused: what a client would
    make of it cannot be judged, or would cost the guard more than it may spend."""

    def __init__(self, coding: str, floor: int) -> None:
        self.coding = coding
        self._inflate: Any = None  # a zlib decompressor, made once a member begins
        self._members = 0  # begun so far
        self._ended = False  # what follows the body is ignored, as clients do
        self._pending = b""  # coded bytes not decoded yet, for want of room
        self._allowed = floor  # decoded bytes allowed from now on: grows with coded bytes

    def take(self, chunk: bytes, most: int) -> bytes:
        """Up to `most` decoded bytes, of the coded bytes still pending and then `chunk`."""
        coded, self._pending = self._pending + chunk, b""
        self._allowed += DECODED_RATIO * len(chunk)
        out: list[bytes] = []
        while coded and most > 0 and not self._ended:
            if self._inflate is None:
                if self._members:
                    coded = coded.lstrip(b"\0")  # padding after a member
                if len(coded) < 2:
                    break  # a member's first bytes say what it is: wait for them
                if self._members and (self.coding == "deflate" or coded[:2] != GZIP_MAGIC):
                    self._ended = True  # bytes after the body
                    break
                if self._members == MOST_GZIP_MEMBERS:
                    raise ImageRejected(f"gzip body of over {MOST_GZIP_MEMBERS} members")
                self._inflate = zlib.decompressobj(self._wbits(coded))
                self._members += 1
            try:
                decoded = self._inflate.decompress(coded, most)
            except zlib.error:
                raise ImageRejected(f"body does not decode as {self.coding}") from None
            out.append(decoded)
            most -= len(decoded)
            self._allowed -= len(decoded)
            if self._allowed < 0:
                raise ImageRejected(f"body decodes to over {DECODED_RATIO} times its size")
            if self._inflate.eof:
                coded, self._inflate = self._inflate.unused_data, None  # the next member
            else:
                coded = self._inflate.unconsumed_tail
        self._pending = b"" if self._ended else coded
        return b"".join(out)

    def _wbits(self, coded: bytes) -> int:
        if self.coding != "deflate":
            return 16 + zlib.MAX_WBITS  # gzip
        # RFC 9110 §8.4.1.2 says zlib (RFC 1950); some servers send raw deflate, and
        # clients decode both: a zlib header is a deflate method and a multiple of 31.
        wrapped = coded[0] & 0x0F == 8 and (coded[0] << 8 | coded[1]) % 31 == 0
        return zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS


def decode_file(coded: str, plain: str, coding: str, floor: int) -> None:
    """Write what the file `coded` decodes to into the file `plain`, as Decoding allows."""
    decoding = Decoding(coding, floor)
    with open(coded, "rb") as source, open(plain, "wb") as sink:
        while chunk := source.read(DECODED_PIECE):
            while piece := decoding.take(chunk, DECODED_PIECE):
                sink.write(piece)
                chunk = b""
