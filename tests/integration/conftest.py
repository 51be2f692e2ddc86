"""Fixtures: a fake origin and a pixcache app in front of it, both on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.app import FILLS_KEY, build_app, make_store
from proxy.config import build_config
from storage.store import Store
from tests.clock import FakeClock
from tests.fake_origin import FakeOrigin


@dataclass
class Proxy:
    url: str
    store: Store
    cache_dir: Path
    client: aiohttp.ClientSession
    app: web.Application | None = None

    def entry_files(self) -> list[Path]:
        return [p for p in (self.cache_dir / "entries").rglob("*") if p.is_file()]

    def temp_files(self) -> list[Path]:
        return [p for p in (self.cache_dir / "tmp").iterdir() if p.is_file()]

    async def fills_ended(self, timeout: float = 10.0) -> None:
        """Wait until no fill is in flight: whatever they stored is on disk, whatever they
        discarded is gone (a bound against deadlocks, not a timing assertion)."""
        assert self.app is not None
        fills = self.app[FILLS_KEY]
        for _ in range(int(timeout / 0.01)):
            if not fills.running:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"fills still in flight after {timeout} s: {fills.in_flight}")

    async def get(self, path: str, **kw: Any) -> tuple[aiohttp.ClientResponse, bytes]:
        async with self.client.get(self.url + path, **kw) as resp:
            return resp, await resp.read()


MakeProxy = Callable[..., Awaitable[Proxy]]


@pytest.fixture
async def clock() -> FakeClock:
    """The time of the test's proxies and origin: `clock.advance(s)` instead of sleeping."""
    return FakeClock()


@pytest.fixture
async def origin(clock: FakeClock) -> AsyncIterator[FakeOrigin]:
    async with FakeOrigin(clock=clock) as fake:
        yield fake


@pytest.fixture
async def make_proxy(tmp_path: Path, clock: FakeClock) -> AsyncIterator[MakeProxy]:
    servers: list[TestServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(origin_url: str, **settings: Any) -> Proxy:
        cache_dir = tmp_path / f"cache{len(servers)}"
        flags = {"origin": origin_url, "cache_dir": str(cache_dir), **settings}
        config = build_config(flags, environ={})
        store = make_store(config, clock)
        store.prepare()
        app = build_app(config, store)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        client = aiohttp.ClientSession(auto_decompress=False)
        sessions.append(client)
        url = str(server.make_url("")).rstrip("/")
        return Proxy(url, store, config.cache_dir, client, app)

    yield make
    for client in sessions:
        await client.close()
    for server in servers:
        await server.close()


@pytest.fixture
async def proxy(origin: FakeOrigin, make_proxy: MakeProxy) -> Proxy:
    return await make_proxy(origin.url)


def cache_status(resp: aiohttp.ClientResponse) -> str:
    value = resp.headers.get("Cache-Status")
    assert value is not None, "every response carries Cache-Status"
    return value


@pytest.fixture(scope="session")
def png_bomb() -> bytes:
    """20000x20000 pixels (400 megapixels) in about 50 KB: a 1-bit, all-black PNG."""
    black = pyvips.Image.black(20000, 20000).cast("uchar")
    return black.write_to_buffer(".png", compression=9, bitdepth=1)


@pytest.fixture(scope="session")
def jpeg() -> bytes:
    """A 400x300 gradient."""
    gradient = (pyvips.Image.xyz(400, 300)[0] * 255 / 400).cast("uchar")
    return gradient.write_to_buffer(".jpg", Q=90)
