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

from tests.integration.conftest import MakeProxy, Proxy, cache_status
from tests.integration.test_hostile_requests import proxy_has_waiter

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
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    """§3.5 with §5.2.2.2: once stale, it is validated with the asking user's credentials
    before any reuse, and the client's own max-stale does not loosen that."""
    origin, url = auth_origin
    proxy = await make_proxy(url)
    path = "/doc?cc=max-age%3D1%2C%20must-revalidate"
    await proxy.get(path, headers=ALICE)
    resp, got = await proxy.get(path, headers=BOB)
    assert cache_status(resp).startswith("pixcache; hit") and got == b"secret of alice"
    await asyncio.sleep(1.1)  # Date has one-second resolution: stale for certain now
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
    credentials only."""
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


async def coalesced(
    origin: AuthOrigin, proxy: Proxy, path: str, first: dict[str, str], second: dict[str, str]
) -> list[tuple[int, bytes, str]]:
    """`first` starts a fill the origin holds; `second` joins it; then the origin answers."""
    origin.gate = asyncio.Event()
    leader = asyncio.create_task(proxy.get(path, headers=first))
    await origin.arrived.wait()
    waiter = asyncio.create_task(proxy.get(path, headers=second))
    while not proxy_has_waiter(proxy):  # the second request joined the fill in flight
        await asyncio.sleep(0.01)
    origin.gate.set()
    results = []
    for task in (leader, waiter):
        resp, body = await task
        results.append((resp.status, body, cache_status(resp)))
    return results


async def test_a_waiter_with_other_credentials_fetches_its_own_private_answer(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    """Invariant 3's exception: an answer that may not be shared goes to the leader only;
    the waiter, coalesced into the leader's fill, makes its own request."""
    origin, url = auth_origin
    proxy = await make_proxy(url)
    (_, a, _), (_, b, waiter_cs) = await coalesced(
        origin, proxy, "/doc?cc=max-age%3D600", ALICE, BOB
    )
    assert a == b"secret of alice" and b == b"secret of bob"
    assert sorted(origin.seen, key=str) == [ALICE["Authorization"], BOB["Authorization"]]
    assert "hit" not in waiter_cs.split("; ")
    assert not proxy.entry_files()


async def test_an_anonymous_fill_is_not_shared_with_an_authorized_waiter(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    """The anonymous view is stored and shareable, but not with a request that carries
    Authorization and may be owed a different answer (as for a stored entry)."""
    origin, url = auth_origin
    proxy = await make_proxy(url)
    (_, anon, _), (_, b, waiter_cs) = await coalesced(
        origin, proxy, "/doc?cc=max-age%3D600", {}, BOB
    )
    assert anon == b"anonymous view" and b == b"secret of bob"
    assert 'detail="authorization"' in waiter_cs
    assert sorted(origin.seen, key=str) == [BOB["Authorization"], None]


async def test_a_public_answer_is_shared_by_coalesced_users(
    auth_origin: tuple[AuthOrigin, str], make_proxy: MakeProxy
) -> None:
    origin, url = auth_origin
    proxy = await make_proxy(url)
    path = "/doc?cc=public%2C%20max-age%3D600"
    results = await coalesced(origin, proxy, path, ALICE, BOB)
    assert [body for _, body, _ in results] == [b"secret of alice"] * 2
    assert "collapsed" in results[1][2]
    assert origin.seen == [ALICE["Authorization"]]
    resp, got = await proxy.get(path)
    assert cache_status(resp).startswith("pixcache; hit") and got == b"secret of alice"
