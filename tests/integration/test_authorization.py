"""RFC 9111 §3.5, as users see it: a response to a request with Authorization is stored and
shared only when it carries public, s-maxage or must-revalidate (and then only under that
directive's rules); any other answer goes to the user who asked, alone. A coalesced fill
started by one user never hands another user an answer meant for the first.

The origin is a real aiohttp server on loopback that checks Authorization: each user gets
bytes naming them, so a leak shows in the bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.app import FILLS_KEY
from tests.clock import FakeClock
from tests.integration.conftest import MakeProxy, Proxy, cache_status

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
USERS = {"Bearer alice-token": "alice", "Bearer bob-token": "bob"}
# RFC 9111 §3.5: the response directives that let a shared cache store and reuse a
# response to a request with Authorization.
SHAREABLE = ["public, max-age=600", "s-maxage=600", "max-age=600, must-revalidate"]


@dataclass
class AuthOrigin:
    """Answers /{anything}?cc=... with that Cache-Control; a user's answer names the user,
    an anonymous one is "anonymous view"; an unknown credential gets 401. While `gate` is
    set, answers wait for it (to hold a fill in flight)."""

    seen: list[str | None] = field(default_factory=list)  # Authorization of each request
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event | None = None
    vary: str | None = None

    async def handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization")
        self.seen.append(auth)
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        headers = {"Cache-Control": request.query["cc"], "Content-Type": "text/plain"}
        headers["ETag"] = '"v1"'
        if self.vary:
            headers["Vary"] = self.vary
        if auth is None:
            return web.Response(body=b"anonymous view", headers=headers)
        user = USERS.get(auth)
        if user is None:
            return web.Response(
                status=401, body=b"who are you", headers={"Cache-Control": "no-store"}
            )
        return web.Response(body=f"secret of {user}".encode(), headers=headers)


@pytest.fixture
async def auth_origin() -> AsyncIterator[tuple[AuthOrigin, str]]:
    origin = AuthOrigin()
    app = web.Application()
    app.router.add_get("/{path:.*}", origin.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield origin, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_a_private_answer_to_one_user_never_reaches_another(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    """§3.5: max-age alone does not let a shared cache reuse an authorized response."""
    origin, url = auth_origin
    proxy = await make_proxy(url)
    path = "/doc?cc=max-age%3D600"
    for headers, body in [(ALICE, b"secret of alice"), (BOB, b"secret of bob")] * 2:
        resp, got = await proxy.get(path, headers=headers)
        assert resp.status == 200 and got == body
        assert "hit" not in cache_status(resp).split("; ")
    resp, got = await proxy.get(path)  # anonymous: nothing of theirs was stored
    assert got == b"anonymous view"
    # Every user's request reached the origin with the user's own credentials.
    assert origin.seen == [ALICE["Authorization"], BOB["Authorization"]] * 2 + [None]


@pytest.mark.parametrize("cc", SHAREABLE)
async def test_an_answer_the_origin_marks_shareable_is_stored_and_shared(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy, cc: str
) -> None:
    """§3.5: public, s-maxage or must-revalidate (while fresh) let it be reused."""
    origin, url = auth_origin
    proxy = await make_proxy(url)
    path = "/doc?cc=" + cc.replace("=", "%3D").replace(", ", "%2C%20")
    resp, got = await proxy.get(path, headers=ALICE)
    assert resp.status == 200 and got == b"secret of alice"
    for headers in (BOB, ALICE, {}):
        resp, got = await proxy.get(path, headers=headers)
        assert got == b"secret of alice"  # what the origin said everyone may have
        assert cache_status(resp).startswith("pixcache; hit")
    assert origin.seen == [ALICE["Authorization"]]  # forwarded on the fill


async def test_must_revalidate_is_reused_for_authorization_only_while_fresh(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy, clock: FakeClock
) -> None:
    """§3.5 with §5.2.2.2: once stale, it is validated with the asking user's credentials
    before any reuse, and the client's own max-stale does not loosen that."""
    origin, url = auth_origin
    proxy = await make_proxy(url)
    path = "/doc?cc=max-age%3D1%2C%20must-revalidate"
    await proxy.get(path, headers=ALICE)
    resp, got = await proxy.get(path, headers=BOB)
    assert cache_status(resp).startswith("pixcache; hit") and got == b"secret of alice"
    clock.advance(1.1)  # Date has one-second resolution: stale for certain now
    resp, got = await proxy.get(path, headers={**BOB, "Cache-Control": "max-stale=600"})
    assert "hit" not in cache_status(resp).split("; ")
    assert origin.seen == [ALICE["Authorization"], BOB["Authorization"]]


async def test_a_stored_anonymous_answer_is_not_given_to_an_authorized_request(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    """An entry stored without public, s-maxage or must-revalidate answers no request
    with Authorization (§3.5, read conservatively): the user gets their own view."""
    origin, url = auth_origin
    proxy = await make_proxy(url)
    path = "/doc?cc=max-age%3D600"
    await proxy.get(path)
    resp, got = await proxy.get(path)
    assert cache_status(resp).startswith("pixcache; hit") and got == b"anonymous view"
    resp, got = await proxy.get(path, headers=ALICE)
    assert got == b"secret of alice"
    assert origin.seen == [None, ALICE["Authorization"]]


async def test_vary_authorization_keeps_each_users_public_answer_apart(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    """§4.1: a public answer that varies on Authorization is reused for the same
    credentials only; what the cache keeps on disk to tell them apart is not the
    credential itself."""
    origin, url = auth_origin
    origin.vary = "Authorization"
    proxy = await make_proxy(url)
    path = "/doc?cc=public%2C%20max-age%3D600"
    for headers, body in [(ALICE, b"secret of alice"), (BOB, b"secret of bob")] * 2:
        resp, got = await proxy.get(path, headers=headers)
        assert got == body
    resp, _ = await proxy.get(path, headers=ALICE)
    assert cache_status(resp).startswith("pixcache; hit")
    assert origin.seen == [ALICE["Authorization"], BOB["Authorization"]]
    stored = [p.read_bytes() for p in proxy.cache_dir.rglob("*") if p.is_file()]
    assert len(proxy.entry_files()) == 3  # both variants, and the marker that names them
    for token in (b"alice-token", b"bob-token"):
        assert not any(token in data for data in stored)


async def concurrent(
    origin: AuthOrigin, proxy: Proxy, path: str, first: dict[str, str], *later: dict[str, str]
) -> list[tuple[int, bytes, str]]:
    """`first` starts a fill the origin holds; the `later` requests arrive while it is in
    flight (each has started a fill of its own or joined one); then the origin answers."""
    assert proxy.app is not None
    fills = proxy.app[FILLS_KEY]
    origin.gate = asyncio.Event()
    tasks = [asyncio.create_task(proxy.get(path, headers=first))]
    await origin.arrived.wait()
    tasks += [asyncio.create_task(proxy.get(path, headers=h)) for h in later]
    # Every later request has started a fill or joined one (a reader beyond its leader).
    joined = lambda: sum(f.body.tail.readers - 1 for f in fills.in_flight.values())  # noqa: E731
    while fills.running + joined() < 1 + len(later):
        await asyncio.sleep(0.01)
    origin.gate.set()
    results = []
    for task in tasks:
        resp, body = await task
        results.append((resp.status, body, cache_status(resp)))
    return results


async def test_another_users_request_never_gets_a_private_answer_in_flight(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    """A request with other credentials does not join the fill: it fetches with its own
    once that fill has its answer (one fetch in flight per key), and nothing is stored."""
    origin, url = auth_origin
    proxy = await make_proxy(url)
    (_, a, _), (_, b, second) = await concurrent(origin, proxy, "/doc?cc=max-age%3D600", ALICE, BOB)
    assert a == b"secret of alice" and b == b"secret of bob"
    assert origin.seen == [ALICE["Authorization"], BOB["Authorization"]]
    assert "hit" not in second.split("; ") and "collapsed" not in second
    assert not proxy.entry_files()


async def test_an_anonymous_answer_in_flight_is_not_given_to_an_authorized_request(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    """The anonymous view is stored; the authorized request that came meanwhile finds it
    and, as for any stored entry without public, s-maxage or must-revalidate, fetches."""
    origin, url = auth_origin
    proxy = await make_proxy(url)
    (_, anon, _), (_, b, second) = await concurrent(origin, proxy, "/doc?cc=max-age%3D600", {}, BOB)
    assert anon == b"anonymous view" and b == b"secret of bob"
    assert 'detail="authorization"' in second
    assert origin.seen == [None, BOB["Authorization"]]


async def test_a_public_answer_in_flight_is_shared_with_another_user(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    origin, url = auth_origin
    proxy = await make_proxy(url)
    path = "/doc?cc=public%2C%20max-age%3D600"
    results = await concurrent(origin, proxy, path, ALICE, BOB)
    assert [body for _, body, _ in results] == [b"secret of alice"] * 2
    assert results[1][2].startswith("pixcache; hit")
    assert origin.seen == [ALICE["Authorization"]]
    resp, got = await proxy.get(path)
    assert cache_status(resp).startswith("pixcache; hit") and got == b"secret of alice"


async def test_one_users_request_does_not_undo_coalescing_for_everyone_else(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    """Anonymous requests that arrive while a user's fill (whose answer turns out private)
    is in flight coalesce among themselves: one anonymous fetch, not one each."""
    origin, url = auth_origin
    proxy = await make_proxy(url)
    results = await concurrent(origin, proxy, "/doc?cc=max-age%3D600", ALICE, {}, {}, {})
    assert [body for _, body, _ in results] == [b"secret of alice"] + [b"anonymous view"] * 3
    assert origin.seen == [ALICE["Authorization"], None]


async def test_requests_with_the_same_credentials_share_one_fill(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    origin, url = auth_origin
    proxy = await make_proxy(url)
    path = "/doc?cc=public%2C%20max-age%3D600"
    results = await concurrent(origin, proxy, path, ALICE, ALICE)
    assert [body for _, body, _ in results] == [b"secret of alice"] * 2
    assert "collapsed" in results[1][2]
    assert origin.seen == [ALICE["Authorization"]]
