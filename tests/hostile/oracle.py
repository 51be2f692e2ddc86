"""What a client may receive: the fuzzer's judgement of each response pixcache sent.

A 200 carries exactly bytes the origin sent for that URL (the canonical body, an origin
case's allowed body, the clean answer of an unkeyed-field URL); a 206 carries slices of them
and no more than twice the representation; a partial body is a prefix of one of them. No
response carries another request's secret, an internal address or a library's repr, and no
response is ever for a URL the client did not ask for."""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass

from tests.hostile.canon import CANON, ORIGIN_PATH_FIELD
from tests.hostile.client_cases import ClientCase, Expect
from tests.hostile.origin import UNKEYED_PREFIX, clean_body, poisoned_body
from tests.hostile.origin_cases import BOMB, OriginCase, origin_case, origin_number
from tests.hostile.parse import Message

CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
INTERNALS = (b"Traceback", b"object at 0x", b"aiohttp.", b"ClientConnectorError", b"Errno")
POISON = re.compile(rb"POISON-\d+")
BOMB_MARK = BOMB[12:29]  # the IHDR chunk that declares 20000 x 20000 pixels


def decoded(response: Message) -> bytes:
    """The body as a lenient client decodes its gzip or deflate coding (every gzip member,
    deflate with or without its zlib wrapper), as far as it decodes; else as sent."""
    coding = ",".join(response.all("content-encoding")).strip().lower()
    if coding not in ("gzip", "x-gzip", "deflate"):
        return response.body
    data, out = response.body, []
    if coding == "deflate" and not (len(data) > 1 and (data[0] << 8 | data[1]) % 31 == 0):
        wbits = -zlib.MAX_WBITS
    else:
        wbits = zlib.MAX_WBITS | 32  # gzip or zlib, from its header
    while data:
        inflate = zlib.decompressobj(wbits)
        try:
            out.append(inflate.decompress(data))
        except zlib.error:
            break
        data = inflate.unused_data.lstrip(b"\0")
        if coding == "deflate" or not data.startswith(b"\x1f\x8b"):
            break  # one deflate stream; gzip members while they come (curl, browsers)
    return b"".join(out)


@dataclass(frozen=True)
class Oracle:
    seed: str
    secret: str
    trap_port: int
    origin_address: str  # host:port of the origin, which no error body may name

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - lives as long as the run
    def origin_case(self, number: int) -> OriginCase:
        return origin_case(self.seed, number, self.trap_port)

    def bodies_for(self, path: str, expect: Expect) -> tuple[tuple[bytes, ...], bytes] | None:
        """The complete bodies a 200 for `path` may carry, and the content the origin sent
        for it (which a cut response may be a prefix of); None when any may (a 404 page)."""
        if path in CANON:
            return (CANON[path].body,), CANON[path].body
        number = origin_number(path)
        if number is not None:
            case = self.origin_case(number)
            return case.allowed, case.sent
        if path.startswith(UNKEYED_PREFIX):
            # Only the client that sent an unkeyed field may get the answer it shaped.
            if expect.unkeyed:
                return (clean_body(path), poisoned_body(path)), clean_body(path)
            return (clean_body(path),), clean_body(path)
        return None

    def check(self, case: ClientCase, expect: Expect, response: Message) -> list[str]:
        found = self._leaks(response)
        status = response.status
        if status == 500:
            found.append("500: an internal error reached the client")
        if case.admin:
            if 200 <= status < 300:
                found.append(f"admin answered {status} without the operator's token")
            return found
        if expect.must_reject and status < 400:
            found.append(f"answered {status} to a request RFC 9112 requires rejecting with 400")
        origin_path = response.get(ORIGIN_PATH_FIELD.lower())
        if origin_path is None:
            return found + self._error_checks(case, expect, response)
        if expect.path is not None and origin_path != expect.path:
            found.append(
                f"wrong bytes: a response for {origin_path} answered a request for {expect.path}"
            )
        known = self.bodies_for(origin_path, expect)
        if known is None:
            return found
        bodies, sent = known
        full = status == 200 and expect.method == "GET"
        if full and response.complete and response.body not in bodies:
            if response.body == sent:
                kind = self.origin_case(origin_number(origin_path) or 0).kind
                found.append(f"a 200 for {origin_path} relayed an invalid response ({kind})")
            else:
                size = len(response.body)
                found.append(f"wrong bytes: 200 for {origin_path}, {size} bytes never sent for it")
        cut = full and not response.complete
        if cut and not any(b.startswith(response.body) for b in (*bodies, sent)):
            found.append(f"wrong bytes: a cut 200 for {origin_path} whose bytes were never sent")
        if status == 206 and expect.method == "GET":
            found += self._partial(origin_path, response, bodies)
        if status == 200 and expect.method == "HEAD" and len(bodies) == 1:
            length = response.get("content-length")
            if length is not None and length != str(len(bodies[0])):
                found.append(f"HEAD {origin_path}: Content-Length {length}, body {len(bodies[0])}")
        number = origin_number(origin_path)
        if number is not None and self.origin_case(number).well_formed and status >= 500:
            found.append(f"a valid origin response for {origin_path} became {status}")
        return found

    def _error_checks(self, case: ClientCase, expect: Expect, response: Message) -> list[str]:
        """Responses pixcache made itself (no origin field)."""
        found = []
        if 200 <= response.status < 300:
            found.append(f"{response.status} without the origin's {ORIGIN_PATH_FIELD}")
        if expect.valid and expect.path in CANON and response.status >= 500:
            # The origin answers canonical paths correctly every time.
            found.append(f"a valid request for {expect.path} answered {response.status}")
        number = origin_number(expect.path or "")
        if (
            expect.valid
            and number is not None
            and response.status >= 500
            and response.status != 503
        ):
            if self.origin_case(number).well_formed:
                found.append(f"a valid origin response for {expect.path} became {response.status}")
        body = response.body
        if self.origin_address.encode() in body + response.raw_head:
            found.append("an error response names the origin's address")
        for internal in INTERNALS:
            if internal in body:
                found.append(f"an error body carries {internal!r}")
        return found

    def _leaks(self, response: Message) -> list[str]:
        found = []
        everything = response.raw_head + response.body
        if self.secret.encode() in everything:
            found.append("a response carries a secret sent in a request's header")
        poison = POISON.search(response.body)
        if poison is not None:
            found.append(
                "wrong bytes: a response carries bytes the origin sent unasked on a pooled link "
                f"({poison.group().decode()})"
            )
        if 200 <= response.status < 300 and BOMB_MARK in decoded(response):
            found.append("a pixel flood passed the image guard")
        return found

    def _partial(self, path: str, response: Message, bodies: tuple[bytes, ...]) -> list[str]:
        """RFC 9110 §14.4 and §14.6: each part is the slice its Content-Range names."""
        content_type = response.get("content-type") or ""
        if content_type.startswith("multipart/byteranges"):
            boundary = content_type.split("boundary=", 1)[-1].strip('"')
            parts = _multipart(response.body, boundary.encode())
            if parts is None:
                return [f"206 for {path}: multipart body does not parse"]
        else:
            parts = [(response.get("content-range") or "", response.body)]
        if not response.complete:
            return []  # a cut response: its bytes were checked as far as they go
        found, total = [], 0
        for content_range, data in parts:
            match = CONTENT_RANGE.fullmatch(content_range)
            if match is None:
                found.append(f"206 for {path}: Content-Range {content_range!r}")
                continue
            first, last, size = (int(g) for g in match.groups())
            total += len(data)
            if not any(len(b) == size and b[first : last + 1] == data for b in bodies):
                found.append(
                    f"wrong bytes: 206 for {path}: bytes {first}-{last}/{size} are not those bytes"
                )
        representation = max((len(b) for b in bodies), default=0)
        if total > 2 * representation and total > 1024:
            found.append(f"206 for {path}: {total} bytes of ranges of a {representation}-byte body")
        return found


def _multipart(body: bytes, boundary: bytes) -> list[tuple[str, bytes]] | None:
    """RFC 2046 §5.1.1: CRLF--boundary delimits; the CRLF belongs to the delimiter."""
    delimiter = b"\r\n--" + boundary
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        return None
    parts = []
    for chunk in chunks[1:-1]:
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            return None
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        value = {k.strip().lower(): v.strip() for k, v in fields.items()}.get(b"content-range")
        parts.append(((value or b"").decode("latin-1"), data))
    return parts
