"""Query normalisation (--sort-query-params, --drop-query-params): spellings of one URL that
differ by parameter order or tracking parameters are one entry, filled by one origin fetch of
the normalised target; a purge names the entry by any of its spellings, through the admin
listener and through `pixcache purge`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.app import build_admin, build_app, make_store
from proxy.config import build_config
from tests.commits import settled
from tests.fake_origin import FakeOrigin

TOKEN = "s3cret-admin-token-123"
FRESH = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"}
KEYED = {"sort_query_params": "true", "drop_query_params": "utm_*,fbclid,gclid"}
PROJECT = Path(__file__).resolve().parents[2]


class Stack:
    def __init__(self, proxy: TestServer, admin: TestServer, cache_dir: Path) -> None:
        self.proxy_url = str(proxy.make_url("")).rstrip("/")
        self.admin_address = f"127.0.0.1:{admin.port}"
        self.cache_dir = cache_dir

    async def get(self, target: str) -> tuple[int, bytes, str]:
        async with aiohttp.ClientSession() as client:
            # encoded: the target goes out exactly as written, order and escapes included.
            url = aiohttp.client.URL(self.proxy_url + target, encoded=True)
            async with client.get(url) as resp:
                return resp.status, await resp.read(), resp.headers["Cache-Status"]

    async def purge(self, url: str) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as client:
            admin = f"http://{self.admin_address}/purge"
            async with client.post(admin, params={"url": url}, headers=headers) as resp:
                return resp.status, await resp.text()


@pytest.fixture
async def start(origin: FakeOrigin, tmp_path: Path) -> AsyncIterator:
    servers: list[TestServer] = []

    async def make(**settings: str) -> Stack:
        cache_dir = tmp_path / f"cache{len(servers)}"
        flags = {"origin": origin.url, "cache_dir": str(cache_dir), "admin_token": TOKEN}
        config = build_config({**flags, **settings}, environ={})
        store = make_store(config)
        store.prepare()
        app = build_app(config, store)
        proxy = TestServer(app, host="127.0.0.1")
        admin = TestServer(build_admin(config, app), host="127.0.0.1")
        await proxy.start_server()
        await admin.start_server()
        servers.extend((admin, proxy))
        return Stack(proxy, admin, config.cache_dir)

    yield make
    for server in servers:
        await server.close()


SPELLINGS = [
    "/i.jpg?w=10&h=5&utm_source=news",
    "/i.jpg?h=5&fbclid=IwAR0x&w=10",
    "/i.jpg?utm_medium=mail&w=10&h=5&gclid=Cj0K&utm_campaign=spring",
    "/i.jpg?h=5&w=10",
    "/i.jpg?w=1%30&%68=5",  # RFC 3986 §6.2.2.2: %30 is "0", %68 is "h"
    "/i.jpg?&w=10&&h=5&",
]


async def test_tracking_parameters_and_order_make_one_entry_and_one_fetch(
    start, origin: FakeOrigin
) -> None:
    stack = await start(**KEYED)
    origin.add("/i.jpg", b"the image", headers=FRESH)
    statuses = []
    for target in SPELLINGS:
        status, body, cache = await stack.get(target)
        assert (status, body) == (200, b"the image")
        statuses.append(cache.startswith("pixcache; hit"))
        await settled(stack.cache_dir)
    assert statuses == [False] + [True] * (len(SPELLINGS) - 1)
    assert origin.hits["/i.jpg"] == 1
    # The origin was asked for the normalised target: no tracking parameter, sorted.
    assert [target for _, target, _ in origin.requests] == ["/i.jpg?h=5&w=10"]


async def test_repeated_names_keep_their_order_and_stay_apart(start, origin: FakeOrigin) -> None:
    stack = await start(**KEYED)
    origin.add("/l.jpg", b"list", headers=FRESH)
    await stack.get("/l.jpg?x=1&a=0&x=2")
    await settled(stack.cache_dir)
    _, _, cache = await stack.get("/l.jpg?x=2&a=0&x=1")
    assert not cache.startswith("pixcache; hit")  # x=2,1 is another list than x=1,2
    _, _, cache = await stack.get("/l.jpg?a=0&x=1&utm_id=3&x=2")
    assert cache.startswith("pixcache; hit")
    assert [t for _, t, _ in origin.requests] == ["/l.jpg?a=0&x=1&x=2", "/l.jpg?a=0&x=2&x=1"]


async def test_off_by_default_each_spelling_is_its_own_entry(start, origin: FakeOrigin) -> None:
    stack = await start()
    origin.add("/i.jpg", b"the image", headers=FRESH)
    for target in SPELLINGS[:4]:
        await stack.get(target)
        await settled(stack.cache_dir)
    assert origin.hits["/i.jpg"] == 4
    assert [t for _, t, _ in origin.requests] == SPELLINGS[:4]


async def test_purge_by_another_spelling_removes_the_entry(start, origin: FakeOrigin) -> None:
    stack = await start(**KEYED)
    origin.add("/p.jpg", b"purge me", headers=FRESH)
    await stack.get("/p.jpg?b=2&a=1")
    await settled(stack.cache_dir, entry=True)
    status, text = await stack.purge("/p.jpg?utm_source=x&a=1&b=2")
    assert status == 200 and '"purged": 1' in text and "/p.jpg?a=1&b=2" in text
    _, _, cache = await stack.get("/p.jpg?a=1&b=2")
    assert not cache.startswith("pixcache; hit")
    assert origin.hits["/p.jpg"] == 2


async def test_pixcache_purge_uses_the_same_rule(start, origin: FakeOrigin) -> None:
    stack = await start(**KEYED)
    origin.add("/c.jpg", b"cli", headers=FRESH)
    await stack.get("/c.jpg?z=1&y=2")
    await settled(stack.cache_dir, entry=True)
    env = {**os.environ, "PIXCACHE_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(PROJECT)}
    cli = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "proxy", "purge", "/c.jpg?gclid=g&y=2&z=1"),
        *("--instances", stack.admin_address),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0 and b'"purged": 1' in out
    _, _, cache = await stack.get("/c.jpg?y=2&z=1")
    assert not cache.startswith("pixcache; hit")
    assert origin.hits["/c.jpg"] == 2


async def test_signed_parameters_reach_the_origin(start, origin: FakeOrigin) -> None:
    """A query-signed origin still gets its signature: a signed name is never dropped."""
    stack = await start(
        sort_query_params="true", drop_query_params="utm_*,x*", signed_query_params="sig,expires"
    )
    origin.add("/s.jpg", b"signed", headers=FRESH)
    status, body, _ = await stack.get("/s.jpg?w=1&xid=3&sig=AbC-_9&utm_source=n&expires=99")
    assert (status, body) == (200, b"signed")
    assert [t for _, t, _ in origin.requests] == ["/s.jpg?expires=99&sig=AbC-_9&w=1"]
