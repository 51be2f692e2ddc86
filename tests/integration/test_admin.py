"""The admin listener: the token guards every call; purges by URL, prefix and tag, hard
and soft, do what they say (shown by the next request's Cache-Status and origin count);
stats, metrics and health answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import FILLS_KEY, build_admin, build_app, make_store
from proxy.config import ConfigError, build_config
from storage.keylock import KeyLock
from storage.layout import primary_key_hash
from tests.clock import FakeClock
from tests.commits import settled, storing
from tests.fake_origin import FakeOrigin, Obj

TOKEN = "s3cret-admin-token-123"
FRESH = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"}


class Stack:
    def __init__(self, proxy: TestServer, admin: TestServer, cache_dir: Path) -> None:
        self.proxy_url = str(proxy.make_url("")).rstrip("/")
        self.admin_url = str(admin.make_url("")).rstrip("/")
        self.cache_dir = cache_dir
        self.fills = proxy.app[FILLS_KEY]

    async def get(self, path: str, **kw: str) -> tuple[int, bytes, str]:
        async with aiohttp.ClientSession() as client:
            async with client.get(self.proxy_url + path, **kw) as resp:
                return resp.status, await resp.read(), resp.headers["Cache-Status"]

    async def admin(self, method: str, path: str, token: str | None = TOKEN):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as client:
            async with client.request(method, self.admin_url + path, headers=headers) as resp:
                return resp.status, await resp.text()

    async def stored(self, path: str) -> None:
        """A miss, then wait until its entry is committed, so the next request hits."""
        await self.get(path)
        for _ in range(500):
            # The fill has ended: committed, indexed, its lock let go.
            if not self.fills.running and not any((self.cache_dir / "tmp").iterdir()):
                status, _, cache = await self.get(path)
                if cache.startswith("pixcache; hit"):
                    return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{path} was never stored")


@pytest.fixture
async def stack(origin: FakeOrigin, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Stack]:
    config = build_config(
        {"origin": origin.url, "cache_dir": str(tmp_path / "cache"), "admin_token": TOKEN},
        environ={},
    )
    store = make_store(config, clock)
    store.prepare()
    app = build_app(config, store)
    proxy = TestServer(app, host="127.0.0.1")
    admin = TestServer(build_admin(config, app), host="127.0.0.1")
    await proxy.start_server()
    await admin.start_server()
    yield Stack(proxy, admin, config.cache_dir)
    await admin.close()
    await proxy.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/stats"),
        ("POST", "/purge?url=/a"),
        ("POST", "/purge?prefix=/"),
        ("POST", "/purge?tag=t"),
    ],
)
async def test_every_admin_call_without_the_token_gets_401(
    stack: Stack, method: str, path: str
) -> None:
    assert (await stack.admin(method, path, token=None))[0] == 401
    assert (await stack.admin(method, path, token="wrong-token-wrong-token"))[0] == 401
    assert (await stack.admin(method, path))[0] in (200, 503)


async def test_purge_by_url_prefix_and_tag(stack: Stack, origin: FakeOrigin) -> None:
    for path in ("/img/a.jpg", "/img/b.jpg", "/other/c.jpg"):
        origin.add(path, Obj(body=path.encode(), headers={**FRESH, "Surrogate-Key": "k1 shared"}))
    origin.add("/tagged.jpg", Obj(body=b"t", headers={**FRESH, "Surrogate-Key": "promo"}))
    for path in ("/img/a.jpg", "/img/b.jpg", "/other/c.jpg", "/tagged.jpg"):
        await stack.stored(path)

    status, text = await stack.admin("POST", "/purge?url=/img/a.jpg")
    assert status == 200 and '"purged": 1' in text
    assert (await stack.get("/img/a.jpg"))[2].startswith("pixcache; fwd=uri-miss")
    assert (await stack.get("/img/b.jpg"))[2].startswith("pixcache; hit")

    status, _ = await stack.admin("POST", "/purge?prefix=/img/")
    assert status == 200
    assert (await stack.get("/img/b.jpg"))[2].startswith("pixcache; fwd=uri-miss")
    assert (await stack.get("/other/c.jpg"))[2].startswith("pixcache; hit")

    status, _ = await stack.admin("POST", "/purge?tag=promo")
    assert status == 200
    assert (await stack.get("/tagged.jpg"))[2].startswith("pixcache; fwd=uri-miss")
    assert (await stack.get("/other/c.jpg"))[2].startswith("pixcache; hit")
    assert origin.hits["/img/a.jpg"] == 2 and origin.hits["/tagged.jpg"] == 2
    assert origin.hits["/other/c.jpg"] == 1


async def test_soft_purge_revalidates_and_stale_if_error_still_serves(
    stack: Stack, origin: FakeOrigin
) -> None:
    headers = {**FRESH, "ETag": '"v1"', "Cache-Control": "max-age=600, stale-if-error=600"}
    origin.add("/soft.jpg", Obj(body=b"soft", headers=headers))
    await stack.stored("/soft.jpg")
    status, text = await stack.admin("POST", "/purge?url=/soft.jpg&soft=1")
    assert status == 200 and '"purged": 1' in text
    status, body, cache = await stack.get("/soft.jpg")
    assert body == b"soft" and "fwd=stale" in cache and "fwd-status=304" in cache
    await stack.admin("POST", "/purge?url=/soft.jpg&soft=1")
    origin.add("/soft.jpg", Obj(body=b"down", status=503, headers={"Content-Type": "text/plain"}))
    status, body, cache = await stack.get("/soft.jpg")
    assert status == 200 and body == b"soft" and 'detail="stale-if-error"' in cache


async def test_soft_purge_of_a_key_being_filled_is_a_hard_purge(
    stack: Stack, origin: FakeOrigin
) -> None:
    """While a fill holds the key's lock it may commit over the entry at any moment; the
    soft purge does not rewrite the entry under it but removes it."""
    origin.add("/busy.jpg", Obj(body=b"busy", headers={**FRESH, "ETag": '"v1"'}))
    await stack.stored("/busy.jpg")
    fill_lock = KeyLock(stack.cache_dir / "locks", primary_key_hash("/busy.jpg"))
    # As a fill in another worker holds it; the fill that stored the entry releases the
    # lock just after its commit, which the hit above may have seen first.
    for _ in range(250):
        if fill_lock.try_acquire():
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the key's lock was never released by the fill that stored it")
    try:
        status, text = await stack.admin("POST", "/purge?url=/busy.jpg&soft=1")
    finally:
        fill_lock.release()
    assert status == 200 and '"purged": 1' in text
    status, body, cache = await stack.get("/busy.jpg")
    assert body == b"busy" and cache.startswith("pixcache; fwd=uri-miss")
    assert origin.hits["/busy.jpg"] == 2


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_a_known_sequence_of_requests(stack: Stack, origin: FakeOrigin) -> None:
    """Scraped with prometheus-client's own parser: one miss and two hits add exactly that."""
    origin.add("/m.jpg", Obj(body=b"m" * 100, headers=FRESH))
    before = _samples((await stack.admin("GET", "/metrics"))[1])
    await stack.get("/m.jpg")  # a miss
    await settled(stack.cache_dir, entry=True)
    await stack.get("/m.jpg")  # a hit
    await stack.get("/m.jpg")  # a hit
    after = _samples((await stack.admin("GET", "/metrics"))[1])

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("pixcache_requests_total", cache="uri-miss", status="200") == 1
    assert delta("pixcache_requests_total", cache="hit", status="200") == 2
    assert delta("pixcache_body_bytes_total", source="origin") == 100
    assert delta("pixcache_body_bytes_total", source="cache") == 200
    assert delta("pixcache_origin_seconds_count", stage="headers") == 1
    assert delta("pixcache_coalesced_waiters_total") == 0


async def test_stats_and_health(stack: Stack, origin: FakeOrigin) -> None:
    origin.add("/s.jpg", Obj(body=b"s" * 100, headers=FRESH))
    await stack.stored("/s.jpg")
    status, _ = await stack.admin("GET", "/healthz")
    assert status == 200
    status, text = await stack.admin("GET", "/readyz")
    assert status == 200 and '"ready": true' in text
    status, text = await stack.admin("GET", "/stats")
    assert status == 200 and '"entries": 1' in text and '"fills_in_flight": 0' in text


def test_no_token_off_loopback_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="admin-token"):
        build_config(
            {
                "origin": "http://127.0.0.1:9",
                "cache_dir": str(tmp_path),
                "admin_listen": "0.0.0.0:8081",
            },
            environ={},
        )


@asynccontextmanager
async def two_workers(
    origin: FakeOrigin, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[tuple[Stack, Stack]]:
    """Two instances on one cache directory, as two workers of one instance are (one
    clock, as on one machine), each with its admin listener."""
    flags = {"origin": origin.url, "cache_dir": str(tmp_path / "cache"), "admin_token": TOKEN}
    config = build_config(flags, environ={})
    servers = []
    for _ in range(2):
        store = make_store(config, clock)
        store.prepare()
        app = build_app(config, store)
        servers += [
            TestServer(app, host="127.0.0.1"),
            TestServer(build_admin(config, app), host="127.0.0.1"),
        ]
    for server in servers:
        await server.start_server()
    try:
        yield (
            Stack(servers[0], servers[1], config.cache_dir),
            Stack(servers[2], servers[3], config.cache_dir),
        )
    finally:
        for server in servers:
            await server.close()


async def test_a_fill_in_flight_elsewhere_does_not_commit_after_a_purge(
    origin: FakeOrigin, tmp_path: Path, clock: FakeClock
) -> None:
    """The purge taken by one worker stops the other's fill in flight from committing what
    it fetched before the purge."""
    from tests.fake_origin import pattern_bytes

    body = pattern_bytes(200_000, 4)
    origin.add("/race.jpg", Obj(body=body, headers=FRESH, mode="pause", pause_seconds=1.0))
    async with two_workers(origin, tmp_path, clock) as (first, second):
        filling = asyncio.ensure_future(first.get("/race.jpg"))
        await storing(first.cache_dir, written=True)  # paused in the middle of the body
        status, _ = await second.admin("POST", "/purge?url=/race.jpg")
        assert status == 200
        status, got, _ = await filling
        assert status == 200 and got == body  # the client still gets what it asked for
        for _ in range(50):
            if not any((first.cache_dir / "tmp").iterdir()):
                break
            await asyncio.sleep(0.02)
        assert [p for p in (first.cache_dir / "entries").glob("??/*")] == []
        status, _, cache = await first.get("/race.jpg")
        assert cache.startswith("pixcache; fwd=uri-miss")


async def _purge_during_fill_then_fetch(
    filler: Stack, purger: Stack, origin: FakeOrigin, path: str, seed: int
) -> None:
    """A fill of `path` in `filler`, paused in the middle of the body; `purger` takes a
    purge of it; a request after the purge must not be given what the fill fetched before
    it, but fetches anew, while the first client still gets what it asked for."""
    from tests.fake_origin import pattern_bytes

    body = pattern_bytes(200_000, seed)
    origin.add(path, Obj(body=body, headers=FRESH, mode="pause", pause_seconds=1.0))
    filling = asyncio.ensure_future(filler.get(path))
    await storing(filler.cache_dir, written=True)  # paused in the middle of the body
    status, _ = await purger.admin("POST", f"/purge?url={path}")
    assert status == 200
    status, got, cache = await filler.get(path)
    assert status == 200 and got == body
    assert "collapsed" not in cache  # its own fill, not the purged one
    assert origin.hits[path] == 2
    status, got, _ = await filling
    assert status == 200 and got == body  # the first client still gets what it asked for


async def test_a_request_after_a_purge_elsewhere_never_joins_the_fill_it_purged(
    origin: FakeOrigin, tmp_path: Path, clock: FakeClock
) -> None:
    """A request that comes, to the worker whose fill is in flight, after another worker
    took a purge is not given what that fill fetched before it: it fetches anew."""
    async with two_workers(origin, tmp_path, clock) as (first, second):
        await _purge_during_fill_then_fetch(first, second, origin, "/late2.jpg", seed=6)


async def test_a_request_after_a_purge_never_joins_the_fill_it_purged(
    stack: Stack, origin: FakeOrigin
) -> None:
    """What a fill in flight fetched before a purge is not stored; a request that comes
    after the purge must not be given it either, but fetches the object anew."""
    await _purge_during_fill_then_fetch(stack, stack, origin, "/late.jpg", seed=5)
