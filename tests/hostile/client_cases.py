"""Hostile client connections, generated from (seed, number): malformed framing, request
lines, header blocks and targets, smuggling probes, ranges, conditionals, pipelining and early
disconnects, mixed with valid requests for the canonical objects.

Each case lists the responses it may get, in order (`Expect`). A hostile request is often
followed by a canary: a valid request whose answer shows whether the connection's framing
survived (RFC 9112 §11.2: a response for a path only ever sent inside a body is smuggling)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.hostile.canon import CANON, CANON_PATHS, LAST_MODIFIED, SMUGGLED_PATH
from tests.hostile.vocab import (
    ADMIN_PATHS,
    BAD_AUTHORIZATIONS,
    BAD_REQUEST_LINES,
    CONDITIONALS,
    HEADER_ATTACKS,
    LENGTH_ATTACKS,
    RANGES,
    REQUEST_CACHE_CONTROLS,
    TARGETS,
    UNKEYED_FIELDS,
)

Script = tuple[bytes | float, ...]  # bytes to write, or a pause in seconds
ORIGIN_CASES_PER_CLIENT_CASE = 4  # /o/ numbers available to one client case
LM = LAST_MODIFIED.encode()


@dataclass(frozen=True)
class Expect:
    """One response the connection may carry, in order."""

    method: str  # how the response is framed (HEAD: no body)
    path: str | None  # the URL it must be for (X-Origin-Path), when that is unambiguous
    valid: bool = True  # a well-formed request that the origin answers correctly
    forbidden: bool = False  # RFC 9112 requires the connection to close before this one
    unkeyed: bool = False  # sent with fields that are not part of the cache key
    must_reject: bool = False  # RFC 9112 requires a 4xx for this request


@dataclass
class ClientCase:
    number: int
    kind: str
    script: Script
    expects: list[Expect]
    hostile: int  # how many of its requests are malformed or adversarial
    hangup: bool = False  # the client closes without reading
    admin: bool = False  # sent to the admin listener
    origin_numbers: list[int] = field(default_factory=list)


def request(
    method: str = "GET",
    target: str = "/canon/small",
    fields: list[bytes] | tuple[bytes, ...] = (),
    body: bytes = b"",
    *,
    version: bytes = b"HTTP/1.1",
    host: bool = True,
) -> bytes:
    lines = [b"%s %s %s" % (method.encode(), target.encode("latin-1"), version)]
    if host:
        lines.append(b"Host: pixcache.test")
    lines += [f for f in fields if f]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def smuggled() -> bytes:
    return request("GET", SMUGGLED_PATH)


class Builder:
    """Draws one case's requests from its own Random."""

    def __init__(self, seed: str, number: int, secret: str, trap_port: int) -> None:
        self.rng = random.Random(f"{seed}:client:{number}")
        self.number = number
        self.secret = secret
        self.trap = trap_port
        self.kind = self.rng.choices(list(KINDS), weights=[w for w, _ in KINDS.values()])[0]
        # A valid request sent after a hostile one: its answer shows the framing survived.
        self.canary_data, self.canary = self.valid()

    def case(self, script: Script, expects: list[Expect], hostile: int, **kw: Any) -> ClientCase:
        return ClientCase(self.number, self.kind, script, expects, hostile, **kw)

    def probe(self, data: bytes, first: Expect, *, canary_forbidden: bool = False) -> ClientCase:
        """One hostile request, then the canary."""
        canary = self.canary
        if canary_forbidden:
            canary = Expect(canary.method, canary.path, forbidden=True)
        return self.case((data + self.canary_data,), [first, canary], 1)

    def canon(self) -> str:
        return self.rng.choice(CANON_PATHS)

    def origin_path(self, index: int = 0) -> str:
        return f"/o/{self.number * ORIGIN_CASES_PER_CLIENT_CASE + index}"

    def extras(self) -> list[bytes]:
        """Fields a client may add that must never come back to it or reach another client."""
        rng = self.rng
        out = []
        if rng.random() < 0.3:
            out.append(b"Cookie: session=%s" % self.secret.encode())
        if rng.random() < 0.2:
            out.append(b"X-Client-Secret: %s" % self.secret.encode())
        if rng.random() < 0.2:
            out.append(
                rng.choice((b"Accept: image/webp", b"Accept-Encoding: gzip", b"Accept: */*"))
            )
        return out

    def valid(self, method: str = "GET") -> tuple[bytes, Expect]:
        path = self.canon()
        return request(method, path, self.extras()), Expect(method, path)

    def sub(self, text: str) -> str:
        return text.replace("{trap}", str(self.trap)).replace("{secret}", self.secret)

    def subb(self, data: bytes) -> bytes:
        return self.sub(data.decode("latin-1")).encode("latin-1")


def client_case(seed: str, number: int, secret: str, trap_port: int) -> ClientCase:
    b = Builder(seed, number, secret, trap_port)
    return KINDS[b.kind][1](b)


def _valid(b: Builder) -> ClientCase:
    pairs = [b.valid(b.rng.choice(("GET", "GET", "HEAD"))) for _ in range(b.rng.randint(1, 6))]
    return b.case((b"".join(p[0] for p in pairs),), [p[1] for p in pairs], 0)


def _slow(b: Builder) -> ClientCase:
    """A valid request in pieces, a few milliseconds apart."""
    data, expect = b.valid()
    cuts = sorted(b.rng.sample(range(1, len(data)), min(5, len(data) - 1)))
    script: list[bytes | float] = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        script += [data[start:end], b.rng.uniform(0.0005, 0.003)]
    return b.case(tuple(script[:-1]), [expect], 1)


def _range(b: Builder) -> ClientCase:
    path = b.canon()
    fields = [b"Range: " + b.rng.choice(RANGES)(b.rng, len(CANON[path].body))]
    if b.rng.random() < 0.3:
        etag = CANON[path].etag.encode()
        fields.append(b"If-Range: " + b.rng.choice((etag, b'"other"', b"garbage", LM)))
    methods = ["GET"] + [b.rng.choice(("GET", "HEAD")) for _ in range(b.rng.randint(0, 3))]
    data = b"".join(request(m, path, fields + b.extras()) for m in methods)
    return b.case((data,), [Expect(m, path) for m in methods], len(methods))


def _conditional(b: Builder) -> ClientCase:
    path = b.canon()
    etag = CANON[path].etag
    fields = [b.subb(b.rng.choice(CONDITIONALS)(b.rng, etag)) for _ in range(b.rng.randint(1, 3))]
    method = b.rng.choice(("GET", "HEAD"))
    return b.probe(request(method, path, fields + b.extras()), Expect(method, path))


def _directives(b: Builder) -> ClientCase:
    path = b.canon()
    field_ = b.rng.choice(REQUEST_CACHE_CONTROLS)
    first = Expect("GET", path, valid=b"only-if-cached" not in field_)
    return b.probe(request("GET", path, [field_, *b.extras()]), first)


def _origin(b: Builder) -> ClientCase:
    """Valid requests; the origin's answers are the hostile part."""
    numbers = [b.number * ORIGIN_CASES_PER_CLIENT_CASE + i for i in range(b.rng.randint(1, 2))]
    targets = [f"/o/{n}" for n in numbers for _ in range(b.rng.randint(1, 2))]
    data = b"".join(request("GET", t, b.extras()) for t in targets)
    if b.rng.random() < 0.15:  # nobody reads the answer: the fill goes on alone
        return b.case((data,), [], 0, hangup=True, origin_numbers=numbers)
    return b.case((data,), [Expect("GET", t) for t in targets], 0, origin_numbers=numbers)


def _unkeyed(b: Builder) -> ClientCase:
    """A request with fields outside the cache key, then the same URL without them."""
    target = f"/u/{b.number}"
    hostile = [b.subb(f) for f in b.rng.sample(UNKEYED_FIELDS, b.rng.randint(1, 3))]
    data = request("GET", target, hostile) + request("GET", target, b.extras())
    return b.case((data,), [Expect("GET", target, unkeyed=True), Expect("GET", target)], 1)


def _smuggle(b: Builder) -> ClientCase:
    """Well-framed content that is itself a request (RFC 9112 §11.2)."""
    method = b.rng.choice(("GET", "HEAD", "GET", "OPTIONS", "DELETE"))
    body = smuggled()
    if b.rng.random() < 0.5:
        fields = [b"Content-Length: %d" % len(body)]
    else:
        fields = [b"Transfer-Encoding: chunked"]
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    path = b.canon()
    first = Expect(method, path if method in ("GET", "HEAD") else None, valid=False)
    return b.probe(request(method, path, fields + b.extras(), body), first)


def _framing(b: Builder) -> ClientCase:
    fields, body, version, must_reject, must_close = b.rng.choice(LENGTH_ATTACKS)(smuggled())
    method = b.rng.choice(("GET", "POST", "HEAD"))
    data = request(method, b.canon(), fields + b.extras(), body, version=version)
    first = Expect(method, None, valid=False, must_reject=must_reject)
    return b.probe(data, first, canary_forbidden=must_close)


def _request_line(b: Builder) -> ClientCase:
    line = b.subb(b.rng.choice(BAD_REQUEST_LINES))
    fields = b"".join(f + b"\r\n" for f in [b"Host: pixcache.test", *b.extras()])
    return b.probe(line + b"\r\n" + fields + b"\r\n", Expect("GET", None, valid=False))


def _headers(b: Builder) -> ClientCase:
    fields, must_reject = b.rng.choice(HEADER_ATTACKS)(b.rng)
    data = request("GET", b.canon(), [b.subb(f) for f in fields] + b.extras())
    return b.probe(data, Expect("GET", None, valid=False, must_reject=must_reject))


def _target(b: Builder) -> ClientCase:
    method = b.rng.choice(("GET", "HEAD"))
    data = request(method, b.sub(b.rng.choice(TARGETS)), b.extras())
    return b.probe(data, Expect(method, None, valid=False))


def _version(b: Builder) -> ClientCase:
    path = b.canon()
    variant = b.rng.randrange(4)
    if variant == 0:  # RFC 9112 §9.3: HTTP/1.0 without keep-alive closes after the response
        data = request("GET", path, version=b"HTTP/1.0", host=False)
        return b.probe(data, Expect("GET", path), canary_forbidden=True)
    if variant == 1:  # RFC 9112 §9.6: after "close" no further request is processed
        data = request("GET", path, [b"Connection: close"])
        return b.probe(data, Expect("GET", path), canary_forbidden=True)
    if variant == 2:
        data = request("GET", path, [b"Connection: keep-alive"], version=b"HTTP/1.0")
        return b.probe(data, Expect("GET", path))
    # RFC 9112 §2.2: empty lines before a request-line are ignored.
    return b.case((b"\r\n\r\n" + b.canary_data,), [b.canary], 1)


def _methods(b: Builder) -> ClientCase:
    method = b.rng.choice(("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "PURGE"))
    body = b.rng.randbytes(b.rng.randint(0, 3000))
    fields = [b"Content-Length: %d" % len(body), *b.extras()]
    if b.rng.random() < 0.3:
        fields.append(b"Expect: 100-continue")
    target = b.rng.choice((b.canon(), f"/x/{b.number}", b.origin_path()))
    return b.probe(request(method, target, fields, body), Expect(method, None, valid=False))


def _disconnect(b: Builder) -> ClientCase:
    """The client goes away mid-request, or before reading the answer."""
    data = request("GET", b.rng.choice((b.canon(), b.origin_path())), b.extras())
    if b.rng.random() < 0.5:
        data = data[: b.rng.randint(1, len(data) - 1)]
    elif b.rng.random() < 0.5:
        partial = b"x" * b.rng.randint(0, 4999)
        data = request("POST", b.canon(), [b"Content-Length: 5000"], partial)
    numbers = [b.number * ORIGIN_CASES_PER_CLIENT_CASE]
    return b.case((data,), [], 1, hangup=True, origin_numbers=numbers)


def _admin(b: Builder) -> ClientCase:
    """The admin listener, never with the operator's token."""
    path = b.rng.choice(ADMIN_PATHS)
    auth = b.subb(b.rng.choice(BAD_AUTHORIZATIONS))
    method = "POST" if path.startswith("/purge") else "GET"
    data = request(method, path, [auth, b"Content-Length: 0"])
    return b.case((data,), [Expect(method, None, valid=False)], 1, admin=True)


# kind -> (weight, builder)
KINDS: dict[str, tuple[int, Callable[[Builder], ClientCase]]] = {
    "valid": (10, _valid),
    "slow": (2, _slow),
    "range": (8, _range),
    "conditional": (5, _conditional),
    "directives": (4, _directives),
    "origin": (22, _origin),
    "unkeyed": (4, _unkeyed),
    "smuggle": (5, _smuggle),
    "framing": (8, _framing),
    "request_line": (6, _request_line),
    "headers": (8, _headers),
    "target": (6, _target),
    "version": (3, _version),
    "methods": (4, _methods),
    "disconnect": (3, _disconnect),
    "admin": (2, _admin),
}
