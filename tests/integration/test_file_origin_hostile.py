"""The folder origin against what can be put in the folder: paths and links that lead out,
a FIFO, a file written while it is read, a file larger than any deadline allows."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from yarl import URL

from tests.fake_origin import pattern_bytes
from tests.integration.conftest import MakeProxy, Proxy, cache_status
from tests.integration.test_fast_origin import LONG, read_until_cut, timeouts, until

SECRET = b"outside the root\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "ok.txt").write_bytes(b"inside\n")
    (folder / "sub" / "deep.txt").write_bytes(b"deep inside\n")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.txt").write_bytes(SECRET)
    (folder / "link-out.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "dir-out").symlink_to(tmp_path / "elsewhere")
    (folder / "link-in.txt").symlink_to(folder / "sub" / "deep.txt")
    (folder / "loop.txt").symlink_to(folder / "loop.txt")
    return folder


async def raw_get(proxy: Proxy, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written: no client-side normalisation of `..` or `%2e`."""
    async with proxy.client.get(URL(proxy.url + path, encoded=True)) as resp:
        return resp.status, await resp.read()


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/%2E%2E/%2e%2e/secret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/link-out.txt",
        "/dir-out/secret.txt",
        "/%00ok.txt",
        "/",
        "/sub",
        "/missing.txt",
        "/loop.txt",
    ],
)
async def test_nothing_outside_the_root_and_nothing_but_files_is_served(
    root: Path, make_proxy: MakeProxy, path: str
) -> None:
    proxy = await make_proxy(f"file://{root}")
    status, body = await raw_get(proxy, path)
    assert status == 404 and SECRET not in body


async def test_files_and_links_inside_the_root_are_served(
    root: Path, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(f"file://{root}")
    assert await raw_get(proxy, "/ok.txt") == (200, b"inside\n")
    assert await raw_get(proxy, "/sub/deep.txt") == (200, b"deep inside\n")
    assert await raw_get(proxy, "/link-in.txt") == (200, b"deep inside\n")


async def test_a_fifo_is_a_404_and_blocks_nothing(root: Path, make_proxy: MakeProxy) -> None:
    os.mkfifo(root / "pipe.jpg")
    proxy = await make_proxy(f"file://{root}")
    async with asyncio.timeout(20):  # an open that waits for a writer would hang here
        statuses = await asyncio.gather(*(raw_get(proxy, f"/pipe.jpg?{n}") for n in range(8)))
        assert [status for status, _ in statuses] == [404] * 8
        assert await raw_get(proxy, "/ok.txt") == (200, b"inside\n")


def append_until(path: Path, stop: threading.Event) -> None:
    """Append to `path` every half millisecond until `stop` (at most 20 000 times)."""
    with path.open("ab") as file:
        for _ in range(20_000):
            if stop.is_set():
                return
            file.write(b"y" * 4096)
            file.flush()
            time.sleep(0.0005)


async def test_a_file_written_while_it_is_read_is_never_stored(
    root: Path, make_proxy: MakeProxy
) -> None:
    growing = root / "growing.bin"
    growing.write_bytes(pattern_bytes(32 << 20, seed=2))
    proxy = await make_proxy(f"file://{root}")
    stop = threading.Event()
    writer = threading.Thread(target=append_until, args=(growing, stop))
    writer.start()
    try:
        with capture_logs() as logs:
            async with proxy.client.get(proxy.url + "/growing.bin") as resp:
                assert resp.status == 200
                declared = resp.content_length
                got = await read_until_cut(resp)
        assert declared is not None and got < declared  # cut: it cannot look complete
        assert [e for e in logs if e.get("event") == "incomplete_body"]
    finally:
        stop.set()
        writer.join()
    await until(lambda: not proxy.temp_files())
    assert proxy.entry_files() == []
    whole = growing.read_bytes()
    again, body = await proxy.get("/growing.bin")
    assert "hit" not in cache_status(again) and body == whole
    await until(lambda: not proxy.temp_files())
    third, body = await proxy.get("/growing.bin")
    assert cache_status(third).startswith("pixcache; hit") and body == whole


@pytest.mark.parametrize("client", ["reading", "gone"])
async def test_total_deadline_ends_reading_a_huge_sparse_file(
    root: Path, make_proxy: MakeProxy, client: str
) -> None:
    huge = root / "huge.bin"
    with huge.open("wb") as file:
        file.truncate(20 << 30)  # 20 GiB of holes: read as fast as memory goes
    proxy = await make_proxy(f"file://{root}", **{**LONG, "total_timeout": "1"})
    with capture_logs() as logs:
        async with proxy.client.get(proxy.url + "/huge.bin") as resp:
            assert resp.status == 200
            if client == "reading":
                assert await read_until_cut(resp) > 0
            else:
                await resp.content.readexactly(1 << 16)
                resp.close()
        await until(lambda: bool(timeouts(logs, "total")) and not proxy.temp_files())
    assert proxy.entry_files() == []
    # The worker is free: the next request is answered.
    assert await raw_get(proxy, "/ok.txt") == (200, b"inside\n")


async def test_head_and_other_methods(root: Path, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(f"file://{root}")
    async with proxy.client.head(proxy.url + "/ok.txt") as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == "7"
    async with proxy.client.post(proxy.url + "/ok.txt", data=b"x") as resp:
        assert resp.status == 405
