"""The hostile client's vocabulary: request lines, header blocks, framing fields, targets,
ranges and conditionals that parsers and caches have got wrong. `{trap}` stands for a
loopback port nobody may connect to, `{secret}` for a value that must never come back."""

from __future__ import annotations

import random
from collections.abc import Callable

from tests.hostile.canon import LAST_MODIFIED

# (fields, body, version, must_reject, must_close) for a request whose body is `smuggled`.
Framing = tuple[list[bytes], bytes, bytes, bool, bool]
BODIES: dict[str, Callable[[bytes], bytes]] = {
    "raw": lambda s: s,
    "chunked": lambda s: b"%x\r\n%s\r\n0\r\n\r\n" % (len(s), s),
    "bad_size": lambda s: b"zz\r\n" + s + b"\r\n0\r\n\r\n",
    "overrun": lambda s: b"%x\r\n%sXX\r\n0\r\n\r\n" % (len(s), s),
    "huge_size": lambda s: b"ffffffffffffffffffff\r\n" + s,
    "nul_extension": lambda s: b"%x;\x00\r\n%s\r\n0\r\n\r\n" % (len(s), s),
    "bare_lf": lambda s: b"%x\n%s\n0\n\n" % (len(s), s),
}


def _attack(
    fields: bytes,
    body: str = "raw",
    *,
    reject: bool = False,
    close: bool = False,
    v10: bool = False,
) -> Callable[[bytes], Framing]:
    """`fields` with {n} for the raw body's length and {c} for the chunked body's."""

    def build(smuggled: bytes) -> Framing:
        sized = fields.replace(b"{n}", b"%d" % len(smuggled))
        sized = sized.replace(b"{c}", b"%d" % len(BODIES["chunked"](smuggled)))
        version = b"HTTP/1.0" if v10 else b"HTTP/1.1"
        return sized.split(b"\r\n"), BODIES[body](smuggled), version, reject, close

    return build


LENGTH_ATTACKS: tuple[Callable[[bytes], Framing], ...] = (
    # RFC 9112 §6.3 (5): an invalid Content-Length: 400, then close.
    _attack(b"Content-Length: {n}\r\nContent-Length: 1{n}", reject=True, close=True),
    _attack(b"Content-Length: {n}, 0", reject=True, close=True),
    _attack(b"Content-Length: +{n}", reject=True, close=True),
    _attack(b"Content-Length: -1", reject=True, close=True),
    _attack(b"Content-Length: {n} {n}", reject=True, close=True),
    _attack(b"Content-Length: {n}a", reject=True, close=True),
    # RFC 9112 §6.1: Transfer-Encoding overrides Content-Length; close after responding.
    _attack(b"Content-Length: 4\r\nTransfer-Encoding: chunked", "chunked", close=True),
    _attack(b"Transfer-Encoding: chunked\r\nContent-Length: {c}", "chunked", close=True),
    # RFC 9112 §6.3 (4): chunked not the final coding of a request: 400, then close.
    _attack(b"Content-Length: {n}\r\nTransfer-Encoding: xchunked", reject=True, close=True),
    _attack(b"Transfer-Encoding: chunked, identity", "chunked", reject=True, close=True),
    _attack(b"Transfer-Encoding: identity", reject=True, close=True),
    _attack(b"Transfer-Encoding: gzip", reject=True, close=True),
    # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing; close afterwards.
    _attack(
        b"Transfer-Encoding: chunked\r\nConnection: keep-alive", "chunked", close=True, v10=True
    ),
    # Valid spellings (RFC 9110 §5.6: tokens are case-insensitive, OWS around values).
    _attack(b"Transfer-Encoding:  chunked ", "chunked"),
    _attack(b"Transfer-Encoding: Chunked", "chunked"),
    _attack(b"Content-Length: 000{n}"),
    _attack(b"Content-Length: {n}\r\nContent-Length: {n}"),
    # Obfuscations a lenient parser reads differently from a strict one.
    _attack(b"Transfer-Encoding:\r\n chunked", "chunked"),
    _attack(b"Transfer-Encoding: chunked\x0b", "chunked"),
    _attack(b"Transfer-Encoding : chunked", "chunked", reject=True),  # RFC 9112 §5.1
    _attack(b"Content-Length : {n}", reject=True),
    _attack(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "chunked"),
    _attack(b"Transfer-Encoding: chunked", "bad_size"),
    _attack(b"Transfer-Encoding: chunked", "overrun"),
    _attack(b"Transfer-Encoding: chunked", "huge_size"),
    _attack(b"Transfer-Encoding: chunked", "nul_extension"),
    _attack(b"Transfer-Encoding: chunked", "bare_lf"),
)

# Request lines, each followed by a Host field and an empty line.
BAD_REQUEST_LINES: tuple[bytes, ...] = (
    b"GET  /canon/small HTTP/1.1",
    b"GET /canon/small HTTP/1.1 extra",
    b"GET /canon/small",
    b"GET /canon/small HTTP/2.0",
    b"GET /canon/small HTTP/1.2",
    b"GET /canon/small HTTP/9.9",
    b"GET /canon/small http/1.1",
    b"G\x00ET /canon/small HTTP/1.1",
    b"GET\t/canon/small\tHTTP/1.1",
    b"get /canon/small HTTP/1.1",
    b"GET /canon/small?\xff\xfe HTTP/1.1",
    b"GET /" + b"a" * 70_000 + b" HTTP/1.1",
    b" GET /canon/small HTTP/1.1",
    b"X" * 10_000 + b" /canon/small HTTP/1.1",
    b"OPTIONS * HTTP/1.1",
    b"CONNECT 127.0.0.1:{trap} HTTP/1.1",
    b"GET http://127.0.0.1:{trap}/canon/small HTTP/1.1",
    b"GET https://evil.test/canon/small HTTP/1.1",
    b"GET //127.0.0.1:{trap}/canon/small HTTP/1.1",
    b"GET canon/small HTTP/1.1",
    b"GET #frag HTTP/1.1",
    b"GET /canon/small\rHTTP/1.1",
    b"GET /canon/sm all HTTP/1.1",
    b"GET /canon/small HTTP/1.1\x00",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"PRI * HTTP/2.0\r\n\r\nSM",
    b"GET /canon/small HTTP/1.1\n",
    b"GET /canon/small HTTP/1.1\r\nX-Folded: a\r\n\tb",
)

# Header blocks: rng -> (fields, must_reject)
HEADER_ATTACKS: tuple[Callable[[random.Random], tuple[list[bytes], bool]], ...] = (
    lambda r: ([b"X-Fold: a\r\n b"], False),
    lambda r: ([b"X-A: a\rb"], False),
    lambda r: ([b"X-A: a\nX-Injected: 1"], False),
    lambda r: ([b"X-A: a\x00b"], False),
    lambda r: ([b"X-A : b"], True),  # RFC 9112 §5.1: MUST be rejected with 400
    lambda r: ([b"X-A\t: b"], True),
    lambda r: ([b": no name"], False),
    lambda r: ([b"X(A): not a token"], False),
    lambda r: ([b"NoColonHere"], False),
    lambda r: ([b"X-A: caf\xc3\xa9 \xff\xfe"], False),
    lambda r: ([b"X-\xff: non-ascii name"], False),
    lambda r: ([b"X-Big: " + b"a" * r.choice((9_000, 17_000, 100_000))], False),
    lambda r: ([b"X-Many-%d: %d" % (i, i) for i in range(r.choice((200, 2_000)))], False),
    lambda r: ([b"X-Wide-%d: " % i + b"w" * 8_000 for i in range(12)], False),
    lambda r: ([b"X-A: " + b" " * 10_000 + b"v"], False),
    lambda r: ([b"Host: 127.0.0.1:{trap}"], False),
    lambda r: ([b"Connection: Cookie, Content-Length, Host"], False),
    lambda r: ([b"Connection: " + b"x, " * 3_000], False),
    lambda r: ([b"Upgrade: websocket", b"Connection: Upgrade"], False),
    lambda r: ([b"Expect: 100-continue"], False),
    lambda r: ([b"Expect: garbage"], False),
    lambda r: ([b"X-Sendfile-Type: X-Accel-Redirect", b"X-Accel-Mapping: /=/etc/"], False),
    lambda r: ([b"Authorization: Bearer caf\xc3\xa9 \xff"], False),
    lambda r: ([b"Cookie: " + b"c=%s; " % b"{secret}" * 500], False),
    lambda r: ([b"Cookie: session={secret}\x00"], False),
    lambda r: ([b"Cookie : session={secret}"], True),
    lambda r: ([b"Via: 1.1 pixcache, " * 200], False),
    lambda r: ([b"Max-Forwards: 0"], False),
    lambda r: ([b"Accept-Encoding: " + b"gzip;q=0.5, " * 1_000], False),
)

TARGETS: tuple[str, ...] = (
    "/canon/../canon/small",
    "/canon/%2e%2e/canon/small",
    "/canon%2fsmall",
    "//canon/small",
    "/canon/small%00",
    "/canon/small;param",
    "/%c0%ae%c0%ae/canon/small",
    "/canon\\small",
    "/canon/small?" + "q" * 10_000,
    "/canon/small#frag",
    "/canon/./small",
    "/CANON/SMALL",
    "/canon/%73mall",
    "/%",
    "/canon/small%",
    "/canon/small%zz",
    "/..",
    "/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/canon/small?a=1&a=2",
    "/canon/small?%00",
    "/canon/sm%0d%0aall",
    "/canon/%0d%0aSet-Cookie:%20x=1",
    "/o/%31",
    "/canon/small/",
    "/\xc3\xa9\xff",
    "/" + "%41" * 5_000,
    "/canon/small?{secret}",
)

UNKEYED_FIELDS: tuple[bytes, ...] = (
    b"X-Forwarded-Host: 127.0.0.1:{trap}",
    b"X-Original-URL: /canon/smuggled",
    b"X-Rewrite-URL: /canon/smuggled",
    b"Forwarded: host=evil.test;proto=https",
    b"X-HTTP-Method-Override: DELETE",
    b"X-Host: evil.test",
    b"X-Forwarded-Prefix: /evil",
)
# The lower-case names of UNKEYED_FIELDS: an origin that builds URLs from them is poisoned.
UNKEYED_NAMES = frozenset(f.split(b":", 1)[0].decode().lower() for f in UNKEYED_FIELDS)

REQUEST_CACHE_CONTROLS: tuple[bytes, ...] = (
    b"Cache-Control: no-cache",
    b"Cache-Control: max-age=0",
    b"Cache-Control: only-if-cached",
    b"Cache-Control: max-stale",
    b"Cache-Control: min-fresh=999999999999999999999",
    b"Cache-Control: no-store",
    b"Cache-Control: max-age=-1",
    b"Cache-Control: \xff\xfe",
    b"Pragma: no-cache",
    b"Cache-Control: max-age=1, no-cache, only-if-cached",
    b"Cache-Control: " + b"a," * 3_000,
    b"Cache-Control: max-age=99999999999999999999999999",
)


def _range(r: random.Random, n: int) -> bytes:
    a = r.randint(0, max(0, n + 5))
    return b"bytes=%d-%d" % (a, r.randint(a, a + n))


RANGES: tuple[Callable[[random.Random, int], bytes], ...] = (
    _range,
    lambda r, n: b"bytes=-%d" % r.randint(0, n + 5),
    lambda r, n: b"bytes=%d-" % r.randint(0, n + 5),
    lambda r, n: b"bytes=" + b",".join(_range(r, n)[6:] for _ in range(r.randint(2, 5))),
    lambda r, n: b"bytes=" + b",".join([b"0-"] * 16),  # 16 overlapping ranges
    lambda r, n: b"bytes=" + b",".join(b"%d-%d" % (i, i) for i in range(200)),
    lambda r, n: b"bytes=0-100,50-150",
    lambda r, n: r.choice((b"bytes=abc", b"bytes=5-1", b"items=0-1", b"bytes=", b"bytes=-0")),
    lambda r, n: r.choice((b"bytes=0-99999999999999999999999", b"bytes= 0-1", b"bytes=--1")),
    lambda r, n: r.choice((b"bytes=1-2-3", b"bytes=0-0,-1", b"bytes=%d-" % n, b"bytes=0-0\xff")),
    lambda r, n: b"bytes=" + b"0-0," * 2_000 + b"0-0",
)

CONDITIONALS: tuple[Callable[[random.Random, str], bytes], ...] = (
    lambda r, etag: b"If-None-Match: " + etag.encode(),
    lambda r, etag: b"If-None-Match: *",
    lambda r, etag: b"If-None-Match: W/" + etag.encode(),
    lambda r, etag: b"If-None-Match: garbage, \xff",
    lambda r, etag: b"If-None-Match: " + b", ".join(b'"e%d"' % i for i in range(1_000)),
    lambda r, etag: b'If-None-Match: "x", ' + etag.encode(),
    lambda r, etag: b"If-Modified-Since: " + LAST_MODIFIED.encode(),
    lambda r, etag: b"If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT",
    lambda r, etag: b"If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
    lambda r, etag: b"If-Modified-Since: garbage",
    lambda r, etag: b"If-Match: " + etag.encode(),
    lambda r, etag: b'If-Match: "nope"',
    lambda r, etag: b"If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
)

ADMIN_PATHS: tuple[str, ...] = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/stats",
    "/purge?path=/canon/small",
    "/purge",
    "/",
    "/../stats",
    "/%2e%2e/stats",
    "/stats?" + "x" * 5_000,
)
# None of these is the admin token ({secret}-admin).
BAD_AUTHORIZATIONS: tuple[bytes, ...] = (
    b"",
    b"Authorization: Bearer wrong",
    b"Authorization: Bearer caf\xc3\xa9",
    b"Authorization: Bearer \xff\xfe",
    b"Authorization: Basic Zm9vOmJhcg==",
    b"Authorization: Bearer " + b"A" * 10_000,
    b"Authorization: Bearer {secret}",
    b"Authorization: Bearer {secret}-admi",
    b"Authorization: Bearer {secret}-adminX",
    b"Authorization: Bearer  {secret}-admin",
    b"Authorization: Bearer {secret}-admin\x00",
)
