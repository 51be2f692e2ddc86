"""What the image guard tests share: a fresh response's fields, and the two ways a guarded
response ends (422 before any byte, or cut while streaming). The images they send are
fixtures of tests/integration/conftest.py."""

from __future__ import annotations

import aiohttp
import pytest

from tests.fake_origin import FakeOrigin, Obj
from tests.integration.conftest import MakeProxy, Proxy

FRESH = {"Cache-Control": "max-age=600"}


async def cut_off(proxy: Proxy, path: str) -> None:
    """The response starts (its head judged fine) and is cut when a frame past the first
    bytes is over a limit; nothing is stored."""
    async with proxy.client.get(proxy.url + path) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert proxy.entry_files() == []


async def refused(
    origin: FakeOrigin,
    make_proxy: MakeProxy,
    body: bytes,
    headers: dict[str, str],
    reason: bytes,
    **settings: str,
) -> None:
    """The guard refuses this (fresh) response with 422 and `reason`; nothing is stored."""
    origin.add("/judged", Obj(body=body, headers={**FRESH, **headers}))
    proxy = await make_proxy(origin.url, **settings)
    resp, text = await proxy.get("/judged")
    assert resp.status == 422 and reason in text, (resp.status, text)
    assert proxy.entry_files() == [] and proxy.temp_files() == []
