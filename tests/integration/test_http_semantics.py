"""HTTP caching semantics as a client sees them through pixcache: revalidation (RFC 9111
§4.3), stale-while-revalidate and stale-if-error (RFC 5861) and the operator's grace,
request directives (§5.2.1), client conditional requests (RFC 9110 §13), byte ranges
(RFC 9110 §14), which status codes are stored (§3, §4.2.2), invalidation (§4.4), targeted
cache-control fields (RFC 9213) and lenient parsing (§1.2.2, §4.2.1, §5.1).

Everything runs on real sockets: a client, pixcache, and an origin on loopback. Each test
names the RFC section it checks in its docstring."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer
from multidict import CIMultiDict, CIMultiDictProxy

from storage.layout import primary_key_hash
from tests.clock import FakeClock
from tests.commits import descriptors_settle
from tests.fake_origin import FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import MakeProxy, Proxy, cache_status

LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE_LAST_MODIFIED = "Sat, 05 Nov 1994 08:49:37 GMT"
AFTER_LAST_MODIFIED = "Mon, 07 Nov 1994 08:49:37 GMT"
FAR_FUTURE = "Thu, 01 Jan 2099 00:00:00 GMT"
# Not an image type: the image guard (proxy/guard.py) stays out of these HTTP semantics.
CACHEABLE = {
    "Cache-Control": "max-age=600",
    "Content-Type": "application/octet-stream",
    "ETag": '"v1"',
}
# max-age=1 with a Date of one-second resolution: stale for certain once the clock moved
# this far.
STALE_AFTER = 1.1
BODY = pattern_bytes(5000, seed=7)


# -- helpers --------------------------------------------------------------------------------


def params(resp: aiohttp.ClientResponse) -> list[str]:
    """The parameters of our Cache-Status entry (RFC 9211 §2), e.g. ["pixcache", "hit"]."""
    return [p.strip() for p in cache_status(resp).split(";")]


def is_hit(resp: aiohttp.ClientResponse) -> bool:
    return "hit" in params(resp)


def ttl_of(resp: aiohttp.ClientResponse) -> int:
    for p in params(resp):
        if p.startswith("ttl="):
            return int(p.removeprefix("ttl="))
    raise AssertionError(f"no ttl in {cache_status(resp)!r}")


def origin_headers(origin: FakeOrigin, path: str) -> list[dict[str, str]]:
    """The request headers of every request the origin received for `path`."""
    return [headers for _, p, headers in origin.requests if p == path]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll `check` until it is true (a deadlock detector, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def committed(proxy: Proxy, path: str, before: object = None) -> None:
    """Wait until an entry for `path` is on disk (and differs from `before`, if given)."""
    primary = primary_key_hash(path)

    async def check() -> bool:
        identity = await proxy.store.identity(primary)
        return identity is not None and identity != before

    await eventually(check)


def parse_byteranges(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(Content-Range, bytes) of each part of a multipart/byteranges body (RFC 9110 §14.6)."""
    assert content_type.startswith("multipart/byteranges")
    boundary = content_type.split("boundary=", 1)[1].strip('"')
    delimiter = b"\r\n--" + boundary.encode()
    pieces = (b"\r\n" + body if body.startswith(b"--") else body).split(delimiter)
    assert pieces[0] == b"", "no preamble expected"
    assert pieces[-1] in (b"--", b"--\r\n"), "closing delimiter missing"
    parts = []
    for piece in pieces[1:-1]:
        head, sep, data = piece.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        assert sep, "part without a blank line after its headers"
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if line)
        parts.append((fields["Content-Range"], data))
    return parts


class ScriptedOrigin:
    """A tiny origin whose answers a test writes as a function: for what FakeOrigin cannot
    do (hold a response until the test opens a gate, repeat a header line)."""

    def __init__(self, respond: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]):
        self.respond = respond
        self.requests: list[tuple[str, str, CIMultiDictProxy[str]]] = []
        self.gate = asyncio.Event()
        self.server = RawTestServer(self._handle, host="127.0.0.1")

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests.append((request.method, request.raw_path, request.headers))
        return await self.respond(request)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


MakeScripted = Callable[
    [Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]], Awaitable[ScriptedOrigin]
]


@pytest.fixture
async def scripted() -> AsyncIterator[MakeScripted]:
    origins: list[ScriptedOrigin] = []

    async def make(
        respond: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    ) -> ScriptedOrigin:
        origin = ScriptedOrigin(respond)
        # A response the proxy never reads must not hold up the teardown for a minute.
        await origin.server.start_server(shutdown_timeout=0.25)
        origins.append(origin)
        return origin

    yield make
    for origin in origins:
        origin.gate.set()  # a held response must not hold up the shutdown
        await origin.server.close()


# -- 1. revalidation (RFC 9111 §4.3.1, §4.3.4) ---------------------------------------------


async def test_stale_entry_revalidates_with_if_none_match_and_304_freshens_it(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    """RFC 9111 §4.3.1: a stale entry with an ETag is validated with If-None-Match.
    §4.3.4: a 304 freshens it: the stored body is served, and the fields the 304 carried
    (X-Version, Cache-Control) replace the stored ones, for this and later hits."""
    v1 = {"Cache-Control": "max-age=1", "Content-Type": "application/octet-stream", "ETag": '"v1"'}
    origin.add("/reval.jpg", Obj(body=BODY, headers={**v1, "X-Version": "1"}))
    resp, _ = await proxy.get("/reval.jpg")
    assert "stored" in params(resp)
    clock.advance(STALE_AFTER)
    # Same ETag, new fields and a body that must never reach the client: only a 304 and the
    # stored body can produce what the client is expected to get.
    v2 = {**v1, "Cache-Control": "max-age=600", "X-Version": "2"}
    origin.add("/reval.jpg", Obj(body=b"not this body", headers=v2))

    resp, body = await proxy.get("/reval.jpg")
    assert resp.status == 200 and body == BODY
    assert "fwd=stale" in params(resp) and "fwd-status=304" in params(resp)
    assert resp.headers["X-Version"] == "2"
    assert origin_headers(origin, "/reval.jpg")[-1]["If-None-Match"] == '"v1"'

    resp, body = await proxy.get("/reval.jpg")
    assert is_hit(resp) and resp.status == 200 and body == BODY
    assert resp.headers["X-Version"] == "2"
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert ttl_of(resp) > 500  # the 304's max-age=600 now governs the entry
    assert origin.hits["/reval.jpg"] == 2


@pytest.mark.parametrize("directives", ["private, max-age=600", "no-store, max-age=600"])
async def test_304_that_makes_the_response_private_or_no_store_is_not_reused(
    origin: FakeOrigin, proxy: Proxy, directives: str, clock: FakeClock
) -> None:
    """RFC 9111 §4.3.4: a 304 updates the stored response with the fields it carries;
    §3 and §5.2.2.7: a shared cache must not store a response with `private`, nor
    (§5.2.2.5) one with `no-store`. The client that revalidated gets the body; the
    response must not then answer other clients from the cache."""
    headers = {**CACHEABLE, "Cache-Control": "max-age=1"}
    origin.add("/turns-private", Obj(body=BODY, headers=headers))
    await proxy.get("/turns-private")
    clock.advance(STALE_AFTER)
    origin.add("/turns-private", Obj(body=BODY, headers={**headers, "Cache-Control": directives}))

    resp, body = await proxy.get("/turns-private")
    assert resp.status == 200 and body == BODY and "fwd-status=304" in params(resp)
    resp, body = await proxy.get("/turns-private")
    assert body == BODY
    assert not is_hit(resp), "a private / no-store response was served from the shared cache"
    assert origin.hits["/turns-private"] == 3


async def test_the_body_a_304_made_private_is_sent_without_promising_ranges(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    """RFC 9110 §14.3: Accept-Ranges says ranges of the stored response will be served;
    a response the 304 made private is removed, not stored, so it says nothing of them."""
    headers = {**CACHEABLE, "Cache-Control": "max-age=1"}
    origin.add("/turns-private.jpg", Obj(body=BODY, headers=headers))
    resp, _ = await proxy.get("/turns-private.jpg")
    assert resp.headers.get("Accept-Ranges") == "bytes"  # stored: ranges will be served
    clock.advance(STALE_AFTER)
    private = {**headers, "Cache-Control": "private, max-age=600"}
    origin.add("/turns-private.jpg", Obj(body=BODY, headers=private))
    resp, body = await proxy.get("/turns-private.jpg")
    assert resp.status == 200 and body == BODY and "fwd-status=304" in params(resp)
    assert "Accept-Ranges" not in resp.headers


async def test_200_on_revalidation_replaces_the_stored_body(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    """RFC 9111 §4.3.3: a full (200) response to the conditional request replaces the
    stored response, body included."""
    origin.add(
        "/replace.jpg", Obj(body=b"one", headers={**CACHEABLE, "Cache-Control": "max-age=1"})
    )
    await proxy.get("/replace.jpg")
    clock.advance(STALE_AFTER)
    origin.add("/replace.jpg", Obj(body=b"two-two", headers={**CACHEABLE, "ETag": '"v2"'}))

    resp, body = await proxy.get("/replace.jpg")
    assert resp.status == 200 and body == b"two-two"
    assert "fwd=stale" in params(resp) and "fwd-status=200" in params(resp)
    assert origin_headers(origin, "/replace.jpg")[-1]["If-None-Match"] == '"v1"'
    resp, body = await proxy.get("/replace.jpg")
    assert is_hit(resp) and body == b"two-two" and resp.headers["ETag"] == '"v2"'
    assert origin.hits["/replace.jpg"] == 2


async def test_concurrent_requests_for_a_stale_entry_make_one_revalidation(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    """RFC 9111 §4.3.1 and §4 (collapsed requests, RFC 9211 §2.6): every client waiting on a
    stale key is answered by the one conditional request in flight; the stored body that
    each of them found stale is closed again once they are answered."""
    headers = {**CACHEABLE, "Cache-Control": "max-age=1"}
    origin.add("/herd.jpg", Obj(body=BODY, headers=headers))
    await proxy.get("/herd.jpg")
    clock.advance(STALE_AFTER)
    # The 304 is held back long enough for every request below to find the fill in flight.
    origin.add("/herd.jpg", Obj(body=BODY, headers=CACHEABLE, header_delay=0.4))

    results = await asyncio.gather(*(proxy.get("/herd.jpg") for _ in range(6)))
    for resp, body in results:
        assert resp.status == 200 and body == BODY
        assert "fwd=stale" in params(resp) and "fwd-status=304" in params(resp)
    assert sum("collapsed" in params(resp) for resp, _ in results) == 5
    assert origin.hits["/herd.jpg"] == 2  # the fill, then one revalidation
    assert origin_headers(origin, "/herd.jpg")[-1]["If-None-Match"] == '"v1"'
    await descriptors_settle(proxy.cache_dir / "bodies", 0)  # no hit kept one (hot.py)


async def test_a_revalidation_refused_for_want_of_a_fill_slot_lets_go_of_the_stored_body(
    origin: FakeOrigin, make_proxy: MakeProxy, clock: FakeClock
) -> None:
    """A stale request that finds every fill slot taken is refused (503), and the stored
    body it would have revalidated is not left open."""
    proxy = await make_proxy(origin.url, max_fills="1", fill_queue="0")
    headers = {**CACHEABLE, "Cache-Control": "max-age=1"}
    for path in ("/slow.jpg", "/refused.jpg"):
        origin.add(path, Obj(body=BODY, headers=headers))
        await proxy.get(path)
    clock.advance(STALE_AFTER)
    origin.add("/slow.jpg", Obj(body=BODY, headers=CACHEABLE, header_delay=0.5))
    slow = asyncio.ensure_future(proxy.get("/slow.jpg"))  # holds the one slot meanwhile
    for _ in range(250):
        if origin.hits["/slow.jpg"] == 2:
            break
        await asyncio.sleep(0.02)
    resp, _ = await proxy.get("/refused.jpg")
    assert resp.status == 503
    resp, body = await slow
    assert resp.status == 200 and body == BODY
    await descriptors_settle(proxy.cache_dir / "bodies", 0)


async def test_last_modified_only_entry_revalidates_with_if_modified_since(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    """RFC 9111 §4.3.1: without an ETag, the stored Last-Modified is sent as
    If-Modified-Since; the origin's 304 freshens the entry (§4.3.4)."""
    headers = {"Cache-Control": "max-age=1", "Last-Modified": LAST_MODIFIED}
    origin.add("/lm.jpg", Obj(body=BODY, headers=headers))
    await proxy.get("/lm.jpg")
    clock.advance(STALE_AFTER)
    origin.add(
        "/lm.jpg", Obj(body=b"not this", headers={**headers, "Cache-Control": "max-age=600"})
    )

    resp, body = await proxy.get("/lm.jpg")
    assert resp.status == 200 and body == BODY
    assert "fwd=stale" in params(resp) and "fwd-status=304" in params(resp)
    sent = origin_headers(origin, "/lm.jpg")[-1]
    assert sent["If-Modified-Since"] == LAST_MODIFIED
    assert "If-None-Match" not in sent
    resp, body = await proxy.get("/lm.jpg")
    assert is_hit(resp) and body == BODY
    assert origin.hits["/lm.jpg"] == 2


# -- 3. stale-while-revalidate (RFC 5861 §3) ----------------------------------------------


async def test_stale_while_revalidate_serves_stale_at_once_and_refreshes_in_background(
    scripted: MakeScripted, make_proxy: MakeProxy, clock: FakeClock
) -> None:
    """RFC 5861 §3: within the stale-while-revalidate window, a stale response is served
    at once while one request revalidates it in the background; afterwards the entry is
    fresh with what the origin answered."""

    async def respond(request: web.BaseRequest) -> web.StreamResponse:
        if len(origin.requests) == 1:
            return web.Response(
                body=b"one",
                headers={"Cache-Control": "max-age=1, stale-while-revalidate=30", "ETag": '"v1"'},
            )
        await origin.gate.wait()  # the refresh is held until the test lets it go
        return web.Response(body=b"two", headers={"Cache-Control": "max-age=600", "ETag": '"v2"'})

    origin = await scripted(respond)
    proxy = await make_proxy(origin.url)
    await proxy.get("/swr.jpg")
    await committed(proxy, "/swr.jpg")
    before = await proxy.store.identity(primary_key_hash("/swr.jpg"))
    clock.advance(STALE_AFTER)

    # Answered while the origin still holds the refresh: it cannot have waited for it.
    resp, body = await asyncio.wait_for(proxy.get("/swr.jpg"), 5)
    assert resp.status == 200 and body == b"one"
    assert is_hit(resp) and 'detail="stale-while-revalidate"' in params(resp)

    async def refresh_arrived() -> bool:
        return len(origin.requests) == 2

    await eventually(refresh_arrived)
    assert origin.requests[1][2]["If-None-Match"] == '"v1"'
    # Another request meanwhile is served stale too, and joins the refresh in flight.
    resp, body = await asyncio.wait_for(proxy.get("/swr.jpg"), 5)
    assert is_hit(resp) and body == b"one"

    origin.gate.set()
    await committed(proxy, "/swr.jpg", before)
    resp, body = await proxy.get("/swr.jpg")
    assert is_hit(resp) and body == b"two" and ttl_of(resp) > 500
    assert "stale-while-revalidate" not in cache_status(resp)
    assert len(origin.requests) == 2


# -- 4. stale-if-error (RFC 5861 §4) and the operator's grace ------------------------------


async def test_stale_if_error_serves_the_stale_entry_when_the_origin_answers_503(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    """RFC 5861 §4: within the stale-if-error window, a 5xx from the origin is replaced by
    the stale stored response."""
    headers = {**CACHEABLE, "Cache-Control": "max-age=1, stale-if-error=60"}
    origin.add("/sie.jpg", Obj(body=BODY, headers=headers))
    await proxy.get("/sie.jpg")
    clock.advance(STALE_AFTER)
    origin.add("/sie.jpg", Obj(body=b"down", status=503))

    resp, body = await proxy.get("/sie.jpg")
    assert resp.status == 200 and body == BODY
    assert is_hit(resp) and 'detail="stale-if-error"' in params(resp)
    assert "fwd-status=503" in params(resp)
    assert origin.hits["/sie.jpg"] == 2


async def test_request_stale_if_error_is_honoured(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    """RFC 5861 §4: stale-if-error is also a request directive: the client accepts a stale
    response for that long if the origin fails."""
    origin.add("/req-sie.jpg", Obj(body=BODY, headers={**CACHEABLE, "Cache-Control": "max-age=1"}))
    await proxy.get("/req-sie.jpg")
    clock.advance(STALE_AFTER)
    origin.add("/req-sie.jpg", Obj(body=b"down", status=503))
    resp, body = await proxy.get("/req-sie.jpg", headers={"Cache-Control": "stale-if-error=60"})
    assert resp.status == 200 and body == BODY
    assert is_hit(resp) and 'detail="stale-if-error"' in params(resp)
    resp, body = await proxy.get("/req-sie.jpg")
    assert resp.status == 503 and body == b"down"


async def test_cacheable_5xx_during_stale_if_error_does_not_replace_the_stale_entry(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    """RFC 9111 §4.3.3: a 5xx to a validation request is either forwarded, or the cache
    acts "as if the server failed to respond" and may send the stored response. Having
    chosen the latter (RFC 5861 §4, stale-if-error=60), the cache must not also keep the
    5xx as the new response: while the origin keeps failing, clients keep getting the
    stale entry for the whole window."""
    headers = {**CACHEABLE, "Cache-Control": "max-age=1, stale-if-error=60"}
    origin.add("/sie-cacheable.jpg", Obj(body=BODY, headers=headers))
    await proxy.get("/sie-cacheable.jpg")
    clock.advance(STALE_AFTER)
    error = Obj(body=b"down", status=503, headers={"Cache-Control": "max-age=60"})
    origin.add("/sie-cacheable.jpg", error)

    resp, body = await proxy.get("/sie-cacheable.jpg")
    assert resp.status == 200 and body == BODY and 'detail="stale-if-error"' in params(resp)
    await proxy.fills_ended()  # the fill has done whatever it does with the 503
    resp, body = await proxy.get("/sie-cacheable.jpg")
    assert resp.status == 200 and body == BODY, f"got {resp.status} {cache_status(resp)!r}"


async def test_replaced_5xx_response_does_not_leak_its_origin_connection(
    scripted: MakeScripted, make_proxy: MakeProxy, clock: FakeClock
) -> None:
    """RFC 9111 §4.3.3 / RFC 5861 §4: when the cache answers from the stale entry instead
    of the origin's 5xx, it is done with that 5xx and must let its connection go (close it
    or read it to the end); otherwise each such request holds an origin connection and a
    file descriptor forever. The origin sees this as a response it can never finish."""
    error_finished = asyncio.Event()

    async def respond(request: web.BaseRequest) -> web.StreamResponse:
        if len(origin.requests) == 1:
            cc = "max-age=1, stale-if-error=60"
            return web.Response(body=b"good", headers={"Cache-Control": cc, "ETag": '"g"'})
        chunk = b"e" * 65536
        resp = web.StreamResponse(status=503)
        resp.content_length = len(chunk) * 256  # 16 MiB: more than socket buffers hold
        await resp.prepare(request)
        try:
            for _ in range(256):
                await resp.write(chunk)
        except ConnectionError:
            pass
        finally:
            error_finished.set()
        return resp

    origin = await scripted(respond)
    proxy = await make_proxy(origin.url)
    await proxy.get("/leak")
    clock.advance(STALE_AFTER)
    resp, body = await proxy.get("/leak")
    assert resp.status == 200 and body == b"good" and 'detail="stale-if-error"' in params(resp)

    async def released() -> bool:
        return error_finished.is_set()

    await eventually(released, timeout=3)


async def test_stale_if_error_serves_the_stale_entry_when_the_origin_is_down(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    """RFC 5861 §4: "an error is any situation that would result in a 500, 502, 503, or 504
    HTTP response status code being returned": a refused connection counts."""
    headers = {**CACHEABLE, "Cache-Control": "max-age=1, stale-if-error=60"}
    origin.add("/down.jpg", Obj(body=BODY, headers=headers))
    await proxy.get("/down.jpg")
    clock.advance(STALE_AFTER)
    await origin.stop()

    resp, body = await proxy.get("/down.jpg")
    assert resp.status == 200 and body == BODY
    assert is_hit(resp) and 'detail="stale-if-error"' in params(resp)


async def test_must_revalidate_beats_stale_if_error_and_grace(
    origin: FakeOrigin, make_proxy: MakeProxy, clock: FakeClock
) -> None:
    """RFC 9111 §5.2.2.2 and §4.2.4: with must-revalidate a stale response is never served
    without successful validation, whatever stale-if-error or the operator's grace say: the
    client gets the error (the origin's 503, or 502 when the origin cannot be reached)."""
    proxy = await make_proxy(origin.url, grace="60")
    headers = {**CACHEABLE, "Cache-Control": "max-age=1, stale-if-error=60, must-revalidate"}
    origin.add("/mr.jpg", Obj(body=BODY, headers=headers))
    await proxy.get("/mr.jpg")
    clock.advance(STALE_AFTER)
    origin.add("/mr.jpg", Obj(body=b"down", status=503))

    resp, body = await proxy.get("/mr.jpg")
    assert resp.status == 503 and body == b"down"
    assert not is_hit(resp) and "fwd-status=503" in params(resp)

    await origin.stop()
    resp, body = await proxy.get("/mr.jpg")
    assert resp.status in (502, 504) and body != BODY
    assert not is_hit(resp)


async def test_operator_grace_serves_stale_when_the_origin_fails(
    origin: FakeOrigin, make_proxy: MakeProxy, clock: FakeClock
) -> None:
    """RFC 9111 §4.2.4 lets a cache serve stale when disconnected from the origin; RFC 5861
    §4's behaviour by operator setting: grace=60 serves the stale entry on a 503 although the
    response has no stale-if-error; without grace the client gets the 503."""
    with_grace = await make_proxy(origin.url, grace="60")
    without_grace = await make_proxy(origin.url)
    headers = {**CACHEABLE, "Cache-Control": "max-age=1"}
    origin.add("/grace.jpg", Obj(body=BODY, headers=headers))
    await with_grace.get("/grace.jpg")
    await without_grace.get("/grace.jpg")
    clock.advance(STALE_AFTER)
    origin.add("/grace.jpg", Obj(body=b"down", status=503))

    resp, body = await with_grace.get("/grace.jpg")
    assert resp.status == 200 and body == BODY
    assert is_hit(resp) and 'detail="stale-if-error"' in params(resp)

    resp, body = await without_grace.get("/grace.jpg")
    assert resp.status == 503 and body == b"down"
    assert not is_hit(resp)


# -- 5. request directives (RFC 9111 §5.2.1, §5.4) -----------------------------------------


async def test_request_max_age_0_forces_validation(origin: FakeOrigin, proxy: Proxy) -> None:
    """RFC 9111 §5.2.1.1: max-age=0 refuses a stored response older than 0 s: a fresh entry
    is validated (If-None-Match) before it is used."""
    origin.add("/ma0.jpg", Obj(body=BODY, headers=CACHEABLE))
    await proxy.get("/ma0.jpg")
    resp, body = await proxy.get("/ma0.jpg", headers={"Cache-Control": "max-age=0"})
    assert resp.status == 200 and body == BODY
    assert "fwd=request" in params(resp) and "fwd-status=304" in params(resp)
    assert origin_headers(origin, "/ma0.jpg")[-1]["If-None-Match"] == '"v1"'
    assert origin.hits["/ma0.jpg"] == 2
    resp, _ = await proxy.get("/ma0.jpg")
    assert is_hit(resp)


async def test_request_max_stale_accepts_a_stale_entry_without_the_origin(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    """RFC 9111 §5.2.1.2: max-stale (with a limit the staleness is within, or without a
    value) lets the cache serve a stale response without contacting the origin; with a
    limit exceeded (max-stale=0), it validates."""
    origin.add("/ms.jpg", Obj(body=BODY, headers={**CACHEABLE, "Cache-Control": "max-age=1"}))
    await proxy.get("/ms.jpg")
    clock.advance(STALE_AFTER)
    for value in ("max-stale=60", "max-stale"):
        resp, body = await proxy.get("/ms.jpg", headers={"Cache-Control": value})
        assert resp.status == 200 and body == BODY
        assert is_hit(resp) and ttl_of(resp) <= 0, value
    assert origin.hits["/ms.jpg"] == 1
    resp, body = await proxy.get("/ms.jpg", headers={"Cache-Control": "max-stale=0"})
    assert not is_hit(resp) and "fwd=stale" in params(resp) and body == BODY
    assert origin.hits["/ms.jpg"] == 2


async def test_request_max_stale_does_not_override_must_revalidate(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    """RFC 9111 §5.2.2.2: once stale, a must-revalidate response is not used without
    successful validation, whatever max-stale the request allows."""
    headers = {**CACHEABLE, "Cache-Control": "max-age=1, must-revalidate"}
    origin.add("/ms-mr.jpg", Obj(body=BODY, headers=headers))
    await proxy.get("/ms-mr.jpg")
    clock.advance(STALE_AFTER)
    resp, body = await proxy.get("/ms-mr.jpg", headers={"Cache-Control": "max-stale=60"})
    assert body == BODY and not is_hit(resp) and "fwd=stale" in params(resp)
    assert origin_headers(origin, "/ms-mr.jpg")[-1]["If-None-Match"] == '"v1"'


async def test_request_min_fresh_beyond_the_ttl_forces_validation(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """RFC 9111 §5.2.1.3: min-fresh asks for a response fresh for at least that long: 10 s
    is satisfied by a 600 s entry, 1000 s is not and the entry is validated."""
    origin.add("/mf.jpg", Obj(body=BODY, headers=CACHEABLE))
    await proxy.get("/mf.jpg")
    resp, _ = await proxy.get("/mf.jpg", headers={"Cache-Control": "min-fresh=10"})
    assert is_hit(resp)
    resp, body = await proxy.get("/mf.jpg", headers={"Cache-Control": "min-fresh=1000"})
    assert body == BODY and not is_hit(resp)
    assert "fwd=request" in params(resp) and "fwd-status=304" in params(resp)
    assert origin_headers(origin, "/mf.jpg")[-1]["If-None-Match"] == '"v1"'
    assert origin.hits["/mf.jpg"] == 2


async def test_only_if_cached_never_contacts_the_origin(origin: FakeOrigin, proxy: Proxy) -> None:
    """RFC 9111 §5.2.1.7: only-if-cached gets a stored response or 504 Gateway Timeout,
    never a request to the origin: 504 on a miss and on a stale entry, 200 on a fresh one."""
    only = {"Cache-Control": "only-if-cached"}
    origin.add("/oic.jpg", Obj(body=BODY, headers=CACHEABLE))
    resp, _ = await proxy.get("/oic.jpg", headers=only)
    assert resp.status == 504
    assert origin.hits["/oic.jpg"] == 0
    assert proxy.entry_files() == []

    await proxy.get("/oic.jpg")
    resp, body = await proxy.get("/oic.jpg", headers=only)
    assert resp.status == 200 and body == BODY and is_hit(resp)

    origin.add("/oic-stale", Obj(body=BODY, headers={**CACHEABLE, "Cache-Control": "max-age=0"}))
    await proxy.get("/oic-stale")
    resp, _ = await proxy.get("/oic-stale", headers=only)
    assert resp.status == 504
    assert origin.hits["/oic.jpg"] == 1 and origin.hits["/oic-stale"] == 1


async def test_pragma_no_cache_counts_only_without_cache_control(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """RFC 9111 §5.4: Pragma: no-cache in a request without Cache-Control means no-cache
    (validate first); when Cache-Control is present, Pragma is ignored."""
    origin.add("/pragma.jpg", Obj(body=BODY, headers=CACHEABLE))
    await proxy.get("/pragma.jpg")
    resp, body = await proxy.get("/pragma.jpg", headers={"Pragma": "no-cache"})
    assert body == BODY and not is_hit(resp) and "fwd=request" in params(resp)
    assert origin_headers(origin, "/pragma.jpg")[-1]["If-None-Match"] == '"v1"'
    assert origin.hits["/pragma.jpg"] == 2

    resp, body = await proxy.get(
        "/pragma.jpg", headers={"Pragma": "no-cache", "Cache-Control": "max-stale"}
    )
    assert body == BODY and is_hit(resp)
    assert origin.hits["/pragma.jpg"] == 2


# -- 6. client conditional requests (RFC 9110 §13) ----------------------------------------


async def test_hit_answers_if_none_match_with_304(origin: FakeOrigin, proxy: Proxy) -> None:
    """RFC 9110 §13.1.2: If-None-Match uses weak comparison and `*` matches any current
    representation; a match on GET is answered 304 with the ETag and no body (§15.4.5).
    A non-matching tag gets the full 200."""
    origin.add("/inm.jpg", Obj(body=BODY, headers=CACHEABLE))
    await proxy.get("/inm.jpg")
    for value in ('"v1"', 'W/"v1"', '"other", "v1"', "*"):
        resp, body = await proxy.get("/inm.jpg", headers={"If-None-Match": value})
        assert resp.status == 304, value
        assert body == b""
        assert resp.headers["ETag"] == '"v1"'
        assert resp.headers["Cache-Control"] == "max-age=600"
        assert is_hit(resp)
    resp, body = await proxy.get("/inm.jpg", headers={"If-None-Match": '"v0"'})
    assert resp.status == 200 and body == BODY and is_hit(resp)
    assert origin.hits["/inm.jpg"] == 1


async def test_hit_answers_if_modified_since(origin: FakeOrigin, proxy: Proxy) -> None:
    """RFC 9110 §13.1.3: If-Modified-Since at or after Last-Modified gets 304, before it a
    200 with the body; §13.2.2: it is ignored when If-None-Match is present."""
    origin.add("/ims.jpg", Obj(body=BODY, headers={**CACHEABLE, "Last-Modified": LAST_MODIFIED}))
    await proxy.get("/ims.jpg")
    for since in (LAST_MODIFIED, AFTER_LAST_MODIFIED):
        resp, body = await proxy.get("/ims.jpg", headers={"If-Modified-Since": since})
        assert resp.status == 304 and body == b"", since
        assert resp.headers["ETag"] == '"v1"' and is_hit(resp)
    resp, body = await proxy.get("/ims.jpg", headers={"If-Modified-Since": BEFORE_LAST_MODIFIED})
    assert resp.status == 200 and body == BODY
    resp, body = await proxy.get(
        "/ims.jpg", headers={"If-None-Match": '"v0"', "If-Modified-Since": LAST_MODIFIED}
    )
    assert resp.status == 200 and body == BODY
    assert origin.hits["/ims.jpg"] == 1


async def test_miss_fetches_unconditionally_and_answers_the_clients_condition(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """RFC 9111 §4.3.2 and RFC 9110 §13.2.1: the client's If-None-Match is evaluated by the
    cache, not forwarded on a shared fill: the fill fetches the whole object for everyone,
    and the client gets 304 when the fetched ETag matches."""
    origin.add("/cond-miss.jpg", Obj(body=BODY, headers=CACHEABLE))
    resp, body = await proxy.get("/cond-miss.jpg", headers={"If-None-Match": '"v1"'})
    assert resp.status == 304 and body == b"" and resp.headers["ETag"] == '"v1"'
    assert "fwd=uri-miss" in params(resp)
    sent = origin_headers(origin, "/cond-miss.jpg")[0]
    assert "If-None-Match" not in sent and "If-Modified-Since" not in sent
    await committed(proxy, "/cond-miss.jpg")
    resp, body = await proxy.get("/cond-miss.jpg")
    assert resp.status == 200 and body == BODY and is_hit(resp)
    assert origin.hits["/cond-miss.jpg"] == 1


# -- 7. ranges (RFC 9110 §14) --------------------------------------------------------------


async def test_ranges_on_a_hit(origin: FakeOrigin, proxy: Proxy) -> None:
    """RFC 9110 §14.1.2 and §14.4: a single byte range (first-last, suffix, open-ended) is
    answered 206 with Content-Range and exactly those bytes."""
    n = len(BODY)
    origin.add("/range.jpg", Obj(body=BODY, headers=CACHEABLE))
    await proxy.get("/range.jpg")
    cases = {
        "bytes=0-99": (0, 99),
        "bytes=-10": (n - 10, n - 1),
        "bytes=50-": (50, n - 1),
        f"bytes=4000-{n + 500}": (4000, n - 1),  # a last-pos past the end is clipped
    }
    for value, (first, last) in cases.items():
        resp, body = await proxy.get("/range.jpg", headers={"Range": value})
        assert resp.status == 206, value
        assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{n}", value
        assert body == BODY[first : last + 1], value
        assert int(resp.headers["Content-Length"]) == last - first + 1
        assert is_hit(resp)
    assert origin.hits["/range.jpg"] == 1


async def test_multiple_ranges_on_a_hit_are_multipart_byteranges(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """RFC 9110 §14.6: several ranges are answered 206 multipart/byteranges, each part with
    its own Content-Range and bytes."""
    n = len(BODY)
    origin.add("/multi.jpg", Obj(body=BODY, headers=CACHEABLE))
    await proxy.get("/multi.jpg")
    resp, body = await proxy.get("/multi.jpg", headers={"Range": "bytes=0-9, 100-199, -5"})
    assert resp.status == 206
    assert "Content-Range" not in resp.headers
    parts = parse_byteranges(resp.headers["Content-Type"], body)
    assert parts == [
        (f"bytes 0-9/{n}", BODY[0:10]),
        (f"bytes 100-199/{n}", BODY[100:200]),
        (f"bytes {n - 5}-{n - 1}/{n}", BODY[n - 5 :]),
    ]


async def test_unsatisfiable_and_invalid_ranges(origin: FakeOrigin, proxy: Proxy) -> None:
    """RFC 9110 §15.5.17: a range starting at or past the end gets 416 with
    `Content-Range: bytes */length`; §14.2: a Range field that cannot be parsed is ignored
    and the full 200 is sent."""
    n = len(BODY)
    origin.add("/bad-range.jpg", Obj(body=BODY, headers=CACHEABLE))
    await proxy.get("/bad-range.jpg")
    for value in (f"bytes={n}-", f"bytes={n + 100}-{n + 200}"):
        resp, body = await proxy.get("/bad-range.jpg", headers={"Range": value})
        assert resp.status == 416, value
        assert resp.headers["Content-Range"] == f"bytes */{n}"
        assert body == b""
    for value in ("bytes=abc", "bytes=10-5", "bytes=", "pages=1-2", "bytes 0-9"):
        resp, body = await proxy.get("/bad-range.jpg", headers={"Range": value})
        assert resp.status == 200 and body == BODY, value
        assert "Content-Range" not in resp.headers


async def test_if_range(origin: FakeOrigin, proxy: Proxy) -> None:
    """RFC 9110 §13.1.5: If-Range with the current strong ETag (or the exact Last-Modified)
    lets the Range apply (206); an old ETag, or a weak one (strong comparison), gets the
    whole representation (200)."""
    headers = {**CACHEABLE, "Last-Modified": LAST_MODIFIED}
    origin.add("/if-range.jpg", Obj(body=BODY, headers=headers))
    await proxy.get("/if-range.jpg")
    for validator in ('"v1"', LAST_MODIFIED):
        resp, body = await proxy.get(
            "/if-range.jpg", headers={"Range": "bytes=0-99", "If-Range": validator}
        )
        assert resp.status == 206 and body == BODY[:100], validator
    for validator in ('"v0"', 'W/"v1"', AFTER_LAST_MODIFIED):
        resp, body = await proxy.get(
            "/if-range.jpg", headers={"Range": "bytes=0-99", "If-Range": validator}
        )
        assert resp.status == 200 and body == BODY, validator


async def test_range_on_a_miss_fills_the_whole_object(origin: FakeOrigin, proxy: Proxy) -> None:
    """RFC 9111 §3.3 and RFC 9110 §14.2: a Range on a miss is not forwarded: the fill
    fetches the whole object, the client gets its 206, and the next request is a hit for
    the whole object."""
    n = len(BODY)
    origin.add("/range-miss.jpg", Obj(body=BODY, headers=CACHEABLE))
    resp, body = await proxy.get(
        "/range-miss.jpg", headers={"Range": "bytes=100-199", "If-Range": '"v1"'}
    )
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 100-199/{n}"
    assert body == BODY[100:200]
    sent = origin_headers(origin, "/range-miss.jpg")[0]
    assert "Range" not in sent and "If-Range" not in sent
    await committed(proxy, "/range-miss.jpg")
    resp, body = await proxy.get("/range-miss.jpg")
    assert resp.status == 200 and body == BODY and is_hit(resp)
    assert origin.hits["/range-miss.jpg"] == 1


async def test_206_from_the_origin_is_never_stored(origin: FakeOrigin, proxy: Proxy) -> None:
    """RFC 9111 §3 and §3.3: a 206 is not a complete response and is not stored as one
    (this cache does not combine partial content): every request goes to the origin."""
    headers = {**CACHEABLE, "Content-Range": "bytes 0-9/100"}
    origin.add("/partial.jpg", Obj(body=b"0123456789", status=206, headers=headers))
    for _ in range(2):
        resp, body = await proxy.get("/partial.jpg")
        assert resp.status == 206 and body == b"0123456789"
        assert not is_hit(resp) and "stored" not in params(resp)
    assert origin.hits["/partial.jpg"] == 2
    assert proxy.entry_files() == []


# -- 8. status codes (RFC 9111 §3, §4.2.2) -------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "stored"),
    [
        (404, {"Cache-Control": "max-age=60"}, True),
        (302, {"Cache-Control": "max-age=60", "Location": "/elsewhere"}, True),
        (302, {"Location": "/elsewhere", "Last-Modified": LAST_MODIFIED}, False),
        (500, {"Cache-Control": "max-age=60"}, True),
    ],
    ids=["404-max-age", "302-max-age", "302-heuristic-only", "500-max-age"],
)
async def test_which_status_codes_are_stored(
    origin: FakeOrigin, proxy: Proxy, status: int, headers: dict[str, str], stored: bool
) -> None:
    """RFC 9111 §3: any final status may be stored when the response says for how long
    (negative caching of a 404, a 302 or a 500 with max-age=60); §4.2.2: a 302 is not
    heuristically cacheable, so without explicit freshness it is not stored."""
    origin.add("/status", Obj(body=b"status body", status=status, headers=headers))
    for _ in range(2):
        resp, body = await proxy.get("/status", allow_redirects=False)
        assert resp.status == status and body == b"status body"
        for name, value in headers.items():
            assert resp.headers[name] == value
    assert is_hit(resp) is stored
    assert origin.hits["/status"] == (1 if stored else 2)


# -- 9. invalidation (RFC 9111 §4.4) -------------------------------------------------------


@pytest.mark.parametrize("form", ["relative", "absolute"])
async def test_unsafe_request_invalidates_location_and_content_location(
    origin: FakeOrigin, proxy: Proxy, form: str
) -> None:
    """RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target URI
    and the URIs in Location and Content-Location when they have the same origin (relative
    references, or absolute ones naming this cache's host)."""
    if form == "relative":  # "c" resolves against /inv/a (RFC 3986 §5.2)
        targets = {"Location": "/inv/b", "Content-Location": "c"}
    else:
        targets = {"Location": f"{proxy.url}/inv/b", "Content-Location": f"{proxy.url}/inv/c"}
    for path in ("/inv/a", "/inv/b", "/inv/c", "/inv/d"):
        origin.add(path, Obj(body=path.encode(), headers=CACHEABLE))
        await proxy.get(path)
    origin.add("/inv/a", Obj(body=b"/inv/a", headers={**CACHEABLE, **targets}))
    async with proxy.client.post(proxy.url + "/inv/a", data=b"x") as posted:
        assert posted.status == 200
    for path in ("/inv/a", "/inv/b", "/inv/c"):
        resp, body = await proxy.get(path)
        assert body == path.encode()
        assert "fwd=uri-miss" in params(resp), path
    resp, _ = await proxy.get("/inv/d")
    assert is_hit(resp)
    assert origin.hits["/inv/a"] == 3  # GET, POST, GET
    assert origin.hits["/inv/b"] == origin.hits["/inv/c"] == 2
    assert origin.hits["/inv/d"] == 1


async def test_error_response_to_an_unsafe_request_does_not_invalidate(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """RFC 9111 §4.4: only a non-error status code (2xx, 3xx) to an unsafe method
    invalidates; a failed POST leaves the stored response alone."""
    origin.add("/failed-post", Obj(body=b"kept", headers=CACHEABLE))
    await proxy.get("/failed-post")
    origin.add("/failed-post", Obj(body=b"kept", status=500, headers=CACHEABLE))
    async with proxy.client.post(proxy.url + "/failed-post", data=b"x") as posted:
        assert posted.status == 500
    resp, body = await proxy.get("/failed-post")
    assert resp.status == 200 and body == b"kept" and is_hit(resp)


async def test_location_on_another_host_does_not_invalidate(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """RFC 9111 §4.4: "a cache MUST NOT invalidate a URI from a Location or
    Content-Location response field if the host part of that URI differs from the host
    part in the target URI" (it would let one origin evict another's entries)."""
    for path in ("/other/a", "/other/b", "/other/c"):
        origin.add(path, Obj(body=path.encode(), headers=CACHEABLE))
        await proxy.get(path)
    origin.add(
        "/other/a",
        Obj(
            body=b"/other/a",
            headers={
                **CACHEABLE,
                "Location": "http://elsewhere.example/other/b",
                "Content-Location": "http://elsewhere.example:8080/other/c",
            },
        ),
    )
    async with proxy.client.post(proxy.url + "/other/a", data=b"x") as posted:
        assert posted.status == 200
    resp, _ = await proxy.get("/other/a")
    assert "fwd=uri-miss" in params(resp)
    for path in ("/other/b", "/other/c"):
        resp, body = await proxy.get(path)
        assert is_hit(resp) and body == path.encode(), path


# -- 10. targeted cache-control fields (RFC 9213) ------------------------------------------


@pytest.mark.parametrize(
    ("headers", "stored"),
    [
        ({"CDN-Cache-Control": "max-age=600", "Cache-Control": "no-store"}, True),
        ({"CDN-Cache-Control": "no-store", "Cache-Control": "max-age=600"}, False),
        (
            {
                "Pixcache-Cache-Control": "max-age=600",
                "CDN-Cache-Control": "no-store",
                "Cache-Control": "no-store",
            },
            True,
        ),
        (
            {
                "Pixcache-Cache-Control": "no-store",
                "CDN-Cache-Control": "max-age=600",
                "Cache-Control": "max-age=600",
            },
            False,
        ),
    ],
    ids=["cdn-allows", "cdn-forbids", "own-field-allows", "own-field-forbids"],
)
async def test_targeted_fields_take_precedence(
    origin: FakeOrigin, proxy: Proxy, headers: dict[str, str], stored: bool
) -> None:
    """RFC 9213 §2.1: the most specific targeted field with a valid value (our own field,
    then CDN-Cache-Control) decides, and Cache-Control is then ignored by this cache. The
    client still receives the origin's Cache-Control unchanged."""
    origin.add("/targeted", Obj(body=b"t", headers={**headers, "ETag": '"t"'}))
    resp, _ = await proxy.get("/targeted")
    assert ("stored" in params(resp)) is stored
    resp, body = await proxy.get("/targeted")
    assert body == b"t" and is_hit(resp) is stored
    assert resp.headers["Cache-Control"] == headers["Cache-Control"]
    assert origin.hits["/targeted"] == (1 if stored else 2)


async def test_configured_cache_control_field_is_the_one_obeyed(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """RFC 9213 §2.1 (a cache's own target list): with cache_control_field=X-My-CC that
    field decides, over CDN-Cache-Control and Cache-Control; Pixcache-Cache-Control is then
    just another field."""
    proxy = await make_proxy(origin.url, cache_control_field="X-My-CC")
    mine = {"X-My-CC": "max-age=600", "CDN-Cache-Control": "no-store", "Cache-Control": "no-store"}
    origin.add("/mine", Obj(body=b"m", headers=mine))
    default_field = {"Pixcache-Cache-Control": "max-age=600", "Cache-Control": "no-store"}
    origin.add("/default-field", Obj(body=b"d", headers=default_field))
    for _ in range(2):
        resp, _ = await proxy.get("/mine")
        resp_default, _ = await proxy.get("/default-field")
    assert is_hit(resp) and origin.hits["/mine"] == 1
    assert not is_hit(resp_default) and origin.hits["/default-field"] == 2


# -- 11. parsing (RFC 9111 §1.2.2, §4.2.1, §5.1, §5.2) --------------------------------------


async def test_quoted_max_age_is_accepted(origin: FakeOrigin, proxy: Proxy) -> None:
    """RFC 9111 §5.2: a recipient accepts the quoted-string form of a directive argument
    (max-age="60") as well as the token form."""
    origin.add("/quoted", Obj(body=b"q", headers={"Cache-Control": 'max-age="60"'}))
    resp, _ = await proxy.get("/quoted")
    assert "stored" in params(resp)
    resp, body = await proxy.get("/quoted")
    assert body == b"q" and is_hit(resp) and 0 < ttl_of(resp) <= 60
    assert origin.hits["/quoted"] == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "max-age=-1"},
        {"Cache-Control": "max-age=abc", "Expires": FAR_FUTURE},
    ],
    ids=["negative-max-age", "non-numeric-max-age-ignores-expires"],
)
async def test_invalid_freshness_information_makes_the_entry_stale(
    origin: FakeOrigin, proxy: Proxy, headers: dict[str, str]
) -> None:
    """RFC 9111 §1.2.2 (delta-seconds is 1*DIGIT) and §4.2.1: "caches are encouraged to
    consider responses that have invalid freshness information (e.g., a max-age directive
    with non-integer content) to be stale" (and with max-age present, Expires is ignored).
    The entry is then stale at once: the next request revalidates it. (An invalid Age is
    ignored instead, §5.1: see test_freshness_bounds.py.)"""
    origin.add("/invalid", Obj(body=b"i", headers={**headers, "ETag": '"i"'}))
    await proxy.get("/invalid")
    resp, body = await proxy.get("/invalid")
    assert body == b"i" and not is_hit(resp)
    assert "fwd=stale" in params(resp)
    assert origin_headers(origin, "/invalid")[-1]["If-None-Match"] == '"i"'
    assert origin.hits["/invalid"] == 2


async def test_two_expires_lines_make_the_entry_stale(
    scripted: MakeScripted, make_proxy: MakeProxy
) -> None:
    """RFC 9111 §4.2.1: "When there is more than one value present for a given directive
    (e.g., two Expires header field lines ...), either the first occurrence should be used or
    the response should be considered stale"; §5.3: Expires must be a single date. pixcache
    considers it stale: it is stored, but revalidated on the next request."""

    async def respond(request: web.BaseRequest) -> web.StreamResponse:
        headers = CIMultiDict([("Expires", FAR_FUTURE), ("Expires", FAR_FUTURE), ("ETag", '"e"')])
        return web.Response(body=b"e", headers=headers)

    origin = await scripted(respond)
    proxy = await make_proxy(origin.url)
    resp, _ = await proxy.get("/expires")
    assert resp.headers.getall("Expires") == [FAR_FUTURE, FAR_FUTURE]
    resp, body = await proxy.get("/expires")
    assert body == b"e" and not is_hit(resp) and "fwd=stale" in params(resp)
    assert len(origin.requests) == 2
    assert origin.requests[1][2]["If-None-Match"] == '"e"'
