"""Request smuggling against `pixcache serve` with one and two workers: content on GET and
HEAD, sent between other clients' requests, never reaches a pooled origin connection."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.raw_client import exchange
from tests.raw_origin import RawOrigin, body_for
from tests.system.procs import free_port, start_pixcache, stop

SMUGGLED = b"GET /poison HTTP/1.1\r\nHost: evil\r\n\r\n"
ROUNDS = 12


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_smuggled_content_changes_nothing_for_other_clients(
    tmp_path: Path, workers: str
) -> None:
    async with RawOrigin() as origin:
        port = free_port()
        proc = start_pixcache(origin.url, tmp_path / "cache", port, "--workers", workers)
        try:
            async with aiohttp.ClientSession() as client:
                for i in range(ROUNDS):
                    method = b"GET" if i % 2 else b"HEAD"
                    attack = (
                        method + b" /a%d HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
                        b"Cache-Control: no-cache\r\nContent-Length: %d\r\n\r\n"
                        % (i, len(SMUGGLED))
                        + SMUGGLED
                    )
                    assert (await exchange(port, attack)).status == 200
                    url = f"http://127.0.0.1:{port}/victim{i}"
                    async with client.get(url, headers={"Cache-Control": "no-cache"}) as resp:
                        assert resp.status == 200
                        assert await resp.read() == body_for(f"/victim{i}".encode())
                # What was stored is what the origin sent for each key.
                for i in range(ROUNDS):
                    url = f"http://127.0.0.1:{port}/victim{i}"
                    async with client.get(url) as resp:
                        assert await resp.read() == body_for(f"/victim{i}".encode())
        finally:
            stop(proc)
        assert origin.malformed == 0
        assert b"/poison" not in origin.paths()
        for request in origin.requests:
            assert request.field(b"content-length") is None, request.head
