"""Hostile origin responses, generated from (seed, number) so that the origin that sends case
N and the client that checks its answer derive the same bytes independently.

Each case names the complete bodies a client may receive with a 200 for its URL (`allowed`):
the payload when some reading RFC 9112 permits yields it, nothing when the framing is invalid
and RFC 9112 §6.3 requires a 502, and never bytes meant for another URL."""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from dataclasses import dataclass

from tests.hostile.canon import ORIGIN_PATH_FIELD

ORIGIN_PREFIX = "/o/"
Script = tuple[bytes | float, ...]  # bytes to write, or a pause in seconds


@dataclass(frozen=True)
class OriginCase:
    number: int
    kind: str
    script: Script
    close: bool  # the origin closes the connection after the script
    allowed: tuple[bytes, ...]  # complete 200 bodies a client may receive
    sent: bytes = b""  # the content the origin put on the wire, however it framed it
    forbidden: bytes | None = None  # bytes no client may ever receive for any URL
    well_formed: bool = False  # a valid response: pixcache must not turn it into an error
    hostile: bool = True  # False: a plain valid response (counted apart from the hostile ones)

    @property
    def path(self) -> str:
        return f"{ORIGIN_PREFIX}{self.number}"


def origin_number(path: str) -> int | None:
    if not path.startswith(ORIGIN_PREFIX) or not path[len(ORIGIN_PREFIX) :].isdigit():
        return None
    return int(path[len(ORIGIN_PREFIX) :])


CACHE_FIELDS = (
    b"Cache-Control: public, max-age=3600",
    b"Cache-Control: public, max-age=3600",
    b"Cache-Control: public, max-age=3600",
    b"",
    b"Cache-Control: max-age=-1",
    b"Cache-Control: max-age=99999999999999999999999999",
    b'Cache-Control: s-maxage="60"',
    b'Cache-Control: no-cache="Set-Cookie", max-age=60',
    b"Cache-Control: private, max-age=60",
    b"Cache-Control: no-store",
    b"Cache-Control: max-age=60\r\nCache-Control: no-store",
    b"Cache-Control: max-age=60, must-understand",
    b"Cache-Control: ,,,max-age=60,,,",
    b"Cache-Control: max-age=60, max-age=0",
    b"Cache-Control: \xff\xfe max-age=60",
    b"Cache-Control: max-age=60, stale-while-revalidate=99999999999999999",
    b"Cache-Control: max-age=60\r\nExpires: garbage",
    b"Expires: 0",
    b"Expires: Thu, 01 Jan 2099 00:00:00 GMT\r\nAge: -5",
    b"Cache-Control: max-age=60\r\nAge: 99999999999999999999",
    b"Cache-Control: max-age=60\r\nAge: 1, 2",
    b"Pixcache-Cache-Control: max-age=60\r\nCache-Control: no-store",
    b"CDN-Cache-Control: no-store\r\nCache-Control: max-age=60",
    b"Surrogate-Control: max-age=60, no-store",
    b"Cache-Control: max-age=60\r\nSet-Cookie: origin-session=1",
    b"Cache-Control: max-age=60\r\nSurrogate-Key: a b c " + b"k" * 4000,
    b"CDN-Cache-Control: max-age=60, &&&\r\nCache-Control: no-store",
    b'CDN-Cache-Control: max-age="60", no-store=?0\r\nCache-Control: max-age=60',
    b"Cache-Control: max-age=60\r\nCache-Status: up; hit\r\nCache-Status: \xff\xfe; hit",
    b"Cache-Control: max-age=60\r\nCache-Status: a, (b c);d=" + b"9" * 30,
)
VARY_FIELDS = (
    b"",
    b"",
    b"",
    b"Vary: *",
    b"Vary: ",
    b"Vary: Accept-Encoding",
    b"Vary: Cookie",
    b"Vary: X-Unkeyed, accept",
    b"Vary: " + b", ".join(b"X-Field-%d" % i for i in range(120)),
    b"Vary: \xff\xfe",
    b"Vary: Accept\r\nVary: Range",
)
VALIDATOR_FIELDS = (
    b"",
    b'ETag: "abc"',
    b'ETag: W/"weak"',
    b"ETag: garbage-without-quotes",
    b'ETag: "' + b"e" * 5000 + b'"',
    b"Last-Modified: garbage",
    b"Last-Modified: Tue, 01 Oct 2024 10:00:00 GMT",
    b'ETag: "a"\r\nETag: "b"',
)
TYPE_FIELDS = (
    b"Content-Type: application/octet-stream",
    b"Content-Type: text/plain",
    b"",
    b"Content-Type: image/jpeg",
    b"Content-Type: image/png; charset=\xff",
    b"Content-Type: \x80\x81",
    b"Content-Encoding: gzip\r\nContent-Type: text/html",
)
ODD_FIELDS = (
    b"X-Non-Ascii: caf\xc3\xa9 \xff\xfe",
    b"X-Empty:",
    b"X-Tab:\tvalue\t",
    b"Link: </x>; rel=preload",
    b"Connection: X-Hop\r\nX-Hop: must not reach the client",
    b"Keep-Alive: timeout=1",
    b"Trailer: X-Late",
    b"Content-Location: /canon/large",
    b"Location: http://127.0.0.1:{trap}/redirected",
    b"X-Accel-Redirect: /etc/passwd",
    b"Date: garbage",
)
BAD_LENGTHS = (b"-1", b"+%d", b"0x%x", b"%d %d", b"%d.0", b"99999999999999999999999", b"", b"%da")
# A lenient reader still finds "200" in these: the payload is then the body it reads.
ODD_STATUS_LINES = (
    b"HTTP/1.1 200 OK\x00",
    b"HTTP/1.1  200 OK",
    b"HTTP/1.1 200",
    b"HTTP/1.1 200 \xff",
    b"HTTP/2.0 200 OK",  # a valid HTTP-version (RFC 9112 §2.3), if an odd one here
)
BAD_STATUS_LINES = (
    b"HTTP/1.1 2000 OK",
    b"HTTP/1.1 20 OK",
    b"HTTP/1.1 -200 OK",
    b"ICY 200 OK",
    b"",
    b"\x00\x01\x02\x03",
    b"HTTP/1.1 OK 200",
)
BAD_CHUNK_SIZES = (b"zz", b"-1", b"ffffffffffffffffffff", b"0x10", b" 5", b"5 5", b"")


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header declares width × height pixels: far over the image guard's limits,
    and a few dozen bytes long (a pixel flood)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)


BOMB = bomb_png()


def in_coding(body: bytes, coding: bytes) -> bytes:
    """`body` in a content-coding, in the forms lenient clients decode: gzip as an empty
    member and then the body, deflate without its zlib wrapper."""
    if coding == b"gzip":
        return gzip.compress(b"") + gzip.compress(body)
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(body) + packer.flush()


def _head(status: bytes, fields: list[bytes]) -> bytes:
    lines = [status] + [f for f in fields if f]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _chunked(rng: random.Random, body: bytes) -> bytes:
    out, pos = [], 0
    while pos < len(body):
        size = rng.randint(1, max(1, len(body) // 3 + 1))
        ext = b";ext=1" if rng.random() < 0.2 else b""
        out.append(
            b"%x%s\r\n%s\r\n"
            % (size if pos + size <= len(body) else len(body) - pos, ext, body[pos : pos + size])
        )
        pos += size
    return b"".join(out) + b"0\r\n\r\n"


def _dribble(rng: random.Random, data: bytes, pieces: int) -> Script:
    """The same bytes in several writes with pauses of a few milliseconds."""
    cuts = (
        sorted(rng.sample(range(1, len(data)), min(pieces, len(data) - 1))) if len(data) > 1 else []
    )
    out: list[bytes | float] = []
    last = 0
    for cut in [*cuts, len(data)]:
        out += [data[last:cut], rng.uniform(0.0005, 0.004)]
        last = cut
    return tuple(out[:-1])


def _payload(rng: random.Random, number: int) -> bytes:
    size = rng.choice((0, rng.randint(1, 100), rng.randint(100, 4_000), rng.randint(4_000, 70_000)))
    return b"pixcache-fuzz %d " % number + rng.randbytes(size)


def origin_case(seed: str, number: int, trap_port: int) -> OriginCase:
    rng = random.Random(f"{seed}:origin:{number}")
    payload = _payload(rng, number)
    fields = [
        b"%s: %s%d" % (ORIGIN_PATH_FIELD.encode(), ORIGIN_PREFIX.encode(), number),
        rng.choice(CACHE_FIELDS),
        rng.choice(VARY_FIELDS) if rng.random() < 0.3 else b"",
        rng.choice(VALIDATOR_FIELDS),
        rng.choice(TYPE_FIELDS),
        rng.choice(ODD_FIELDS).replace(b"{trap}", b"%d" % trap_port) if rng.random() < 0.3 else b"",
    ]
    n = len(payload)
    ok = b"HTTP/1.1 200 OK"
    kind = rng.choice(KINDS)
    plain = (
        kind in ("ok", "ok_chunked", "ok_until_close")
        and fields[1] == CACHE_FIELDS[0]
        and not fields[2]
        and fields[3] in VALIDATOR_FIELDS[:2]
        and fields[4] in TYPE_FIELDS[:3]
        and not fields[5]
    )
    close = rng.random() < 0.3
    if close:
        fields.append(b"Connection: close")

    def case(
        script: Script, allowed: tuple[bytes, ...], *, closes: bool = True, **kw: object
    ) -> OriginCase:
        kw.setdefault("sent", payload)
        return OriginCase(number, kind, script, closes, allowed, hostile=not plain, **kw)  # type: ignore[arg-type]

    with_length = [*fields, b"Content-Length: %d" % n]
    if kind == "ok":
        return case((_head(ok, with_length) + payload,), (payload,), closes=close, well_formed=True)
    if kind == "ok_chunked":
        data = _head(ok, [*fields, b"Transfer-Encoding: chunked"]) + _chunked(rng, payload)
        return case((data,), (payload,), closes=close, well_formed=True)
    if kind == "ok_until_close":
        return case((_head(ok, fields) + payload,), (payload,), well_formed=True)
    if kind == "ok_dribble":
        data = _head(ok, with_length) + payload
        return case(
            _dribble(rng, data, rng.randint(2, 12)), (payload,), closes=close, well_formed=True
        )
    if kind == "interim":
        interim = rng.choice(
            (
                b"HTTP/1.1 100 Continue\r\n\r\n",
                b"HTTP/1.1 103 Early Hints\r\nLink: </canon/small>; rel=preload\r\n\r\n",
                b"HTTP/1.1 102 Processing\r\n\r\n" * 50,
            )
        )
        return case(
            (interim, _head(ok, with_length) + payload), (payload,), closes=close, well_formed=True
        )
    if kind == "extra_after_length":  # RFC 9112 §6.3: the extra bytes are not this body
        cut = rng.randint(0, max(0, n - 1))
        data = _head(ok, [*fields, b"Content-Length: %d" % cut]) + payload
        return case((data,), (payload[:cut],), closes=rng.random() < 0.5)
    if kind == "short_body":
        data = _head(ok, [*fields, b"Content-Length: %d" % (n + rng.randint(1, 5000))]) + payload
        return case((data,), ())
    if kind in ("length_dup_same", "length_list_same"):
        dup = (
            [b"Content-Length: %d" % n] * 2
            if kind == "length_dup_same"
            else [b"Content-Length: %d, %d" % (n, n)]
        )
        return case((_head(ok, [*fields, *dup]) + payload,), (payload,), closes=close)
    if kind in ("length_dup_differ", "length_list_differ"):
        # RFC 9112 §6.3 (5): an invalid Content-Length; a proxy MUST answer 502.
        other = n + rng.randint(1, 9)
        dup = [b"Content-Length: %d" % n, b"Content-Length: %d" % other]
        if kind == "length_list_differ":
            dup = [b"Content-Length: %d, %d" % (n, other)]
        return case((_head(ok, [*fields, *dup]) + payload,), ())
    if kind == "length_invalid":
        value = rng.choice(BAD_LENGTHS)
        value = value % ((n,) * value.count(b"%")) if b"%" in value else value
        return case((_head(ok, [*fields, b"Content-Length: " + value]) + payload,), ())
    if kind == "length_and_chunked":  # RFC 9112 §6.1: Transfer-Encoding wins, or an error
        coded = _chunked(rng, payload)
        data = _head(
            ok,
            [
                *fields,
                b"Content-Length: %d" % rng.randint(0, n + 10),
                b"Transfer-Encoding: chunked",
            ],
        )
        return case((data + coded,), (payload,))
    if kind == "coding_unknown":  # RFC 9112 §6.3 (4): a response is then read until close
        coding = rng.choice(
            (b"gzip", b"xchunked", b"chunked, identity", b"chunked\x00", b"identity")
        )
        data = _head(ok, [*fields, b"Transfer-Encoding: " + coding]) + payload
        return case((data,), (payload,))
    if kind == "chunk_invalid":
        bad = rng.choice(BAD_CHUNK_SIZES)
        data = (
            _head(ok, [*fields, b"Transfer-Encoding: chunked"])
            + bad
            + b"\r\n"
            + payload
            + b"\r\n0\r\n\r\n"
        )
        return case((data,), ())
    if kind == "chunk_overrun":  # more data than the chunk size says
        data = _head(ok, [*fields, b"Transfer-Encoding: chunked"])
        data += b"%x\r\n%sXYZ\r\n0\r\n\r\n" % (n, payload)
        return case((data,), ())
    if kind == "chunk_cut":  # no last chunk: RFC 9112 §7.1, the body is incomplete
        coded = _chunked(rng, payload)
        return case((_head(ok, [*fields, b"Transfer-Encoding: chunked"]) + coded[:-5],), ())
    if kind == "chunk_trailers":
        trailer = rng.choice(
            (b"X-Late: 1", b"Content-Length: 3", b"X-Bad: a\rb", b"Transfer-Encoding: chunked")
        )
        coded = _chunked(rng, payload)[:-2] + trailer + b"\r\n\r\n"
        return case((_head(ok, [*fields, b"Transfer-Encoding: chunked"]) + coded,), (payload,))
    if kind == "status_invalid":
        if rng.random() < 0.3:
            return case((_head(rng.choice(ODD_STATUS_LINES), with_length) + payload,), (payload,))
        return case((_head(rng.choice(BAD_STATUS_LINES), with_length) + payload,), ())
    if kind == "head_huge":
        big = rng.choice(
            ([b"X-Big: " + b"h" * 100_000], [b"X-Many-%d: v" % i for i in range(2_000)])
        )
        return case((_head(ok, [*with_length, *big]) + payload,), (payload,), closes=close)
    if kind == "head_injection":
        injected = rng.choice(
            (
                b"X-A: a\rSet-Cookie: injected=1",
                b"X-A: a\x00b",
                b"X-A : spaced",
                b"X-A: folded\r\n continued",
                b"X(A): not a token",
                b": no name",
                b"X-\xff: non-ascii name",
            )
        )
        return case((_head(ok, [*with_length, injected]) + payload,), (payload,))
    if kind == "close_early":
        data = _head(ok, with_length) + payload
        return case((data[: rng.randint(0, len(data) - 1)],), ())
    if kind == "switching":
        data = _head(
            b"HTTP/1.1 101 Switching Protocols", [b"Upgrade: websocket", b"Connection: upgrade"]
        )
        return case((data + payload,), ())
    if kind == "bodiless_with_body":  # a 204/304 ends at its head, whatever follows
        status = rng.choice((b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified"))
        return case((_head(status, with_length) + payload,), (), closes=rng.random() < 0.5)
    if kind == "unasked_response":
        # A complete response, then one nobody asked for, left on the pooled connection:
        # read as the answer to the next request, it would be another URL's body.
        poison = b"POISON-%d" % number
        late = (
            _head(
                ok,
                [
                    b"%s: /o/poison-%d" % (ORIGIN_PATH_FIELD.encode(), number),
                    b"Cache-Control: max-age=3600",
                    b"Content-Length: %d" % len(poison),
                ],
            )
            + poison
        )
        script = (_head(ok, with_length) + payload, rng.uniform(0.001, 0.01), late)
        return case(script, (payload,), closes=False, forbidden=poison)
    if kind == "guard_bomb":
        label = rng.choice(
            (
                b"Content-Type: image/png",
                b"Content-Type: application/octet-stream",
                b"Content-Type: text/html",
                b"",
                b"Content-Type: image/jpeg",
            )
        )
        # A client decodes a content-coding before the image: so must the guard.
        coding = rng.choice((b"", b"", b"gzip", b"deflate"))
        bomb = in_coding(BOMB, coding) if coding else BOMB
        bomb_fields = [
            fields[0],
            b"Cache-Control: public, max-age=3600",
            label,
            b"Content-Encoding: %s" % coding if coding else b"",
            b"Content-Length: %d" % len(bomb),
        ]
        return case((_head(ok, bomb_fields) + bomb,), (), closes=close, sent=bomb, forbidden=bomb)
    raise AssertionError(kind)


KINDS = (
    "ok", "ok", "ok", "ok_chunked", "ok_until_close", "ok_dribble", "interim",
    "extra_after_length", "short_body", "length_dup_same", "length_list_same",
    "length_dup_differ", "length_list_differ", "length_invalid", "length_and_chunked",
    "coding_unknown", "chunk_invalid", "chunk_overrun", "chunk_cut", "chunk_trailers",
    "status_invalid", "head_huge", "head_injection", "close_early", "switching",
    "bodiless_with_body", "unasked_response", "guard_bomb",
)  # fmt: skip
