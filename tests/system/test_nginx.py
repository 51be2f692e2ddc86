"""The shipped nginx configs (nginx/*.conf) in front of a real `pixcache serve`, run by a real
nginx on 127.0.0.1. The configs are used as shipped; only the addresses are substituted."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from proxy.config import SETTINGS
from tests.commits import settled
from tests.fake_origin import pattern_bytes
from tests.system.procs import REPO, free_port, start_origin, start_pixcache, stop, wait_for_port

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="no nginx binary found (.ci/run installs Debian's nginx-light)"
)

HAS_ADMIN = "admin_listen" in SETTINGS
CONFIGS = REPO / "nginx"
# The placeholders in the shipped files: pixcache's address in compose.yaml, nginx's port in
# the official image, nginx's cache path, and pixcache's cache dir in compose.yaml.
UPSTREAM_SERVER = "server pixcache:8080"
LISTEN = "listen 80;"
NGINX_CACHE = "/var/cache/nginx-pixcache"
PIXCACHE_CACHE = "/var/cache/pixcache/"
UPSTREAM_LINE = re.compile(r"\s*server\s+[\w.-]+:\d+")


def render(name: str, tmp: Path, listen_port: int, upstream_ports: list[int]) -> Path:
    """Write nginx.conf in `tmp` that includes nginx/`name` with loopback addresses (and
    tmp/pixcache-cache as pixcache's cache dir)."""
    text = (CONFIGS / name).read_text()
    assert text.count(LISTEN) == 1, f"{name}: expected one `{LISTEN}`"
    text = text.replace(LISTEN, f"listen 127.0.0.1:{listen_port};")
    if NGINX_CACHE in text:
        text = text.replace(NGINX_CACHE, str(tmp / "nginx-cache"))
    if PIXCACHE_CACHE in text:
        text = text.replace(PIXCACHE_CACHE, f"{tmp / 'pixcache-cache'}/")
    lines = text.splitlines()
    servers = [i for i, line in enumerate(lines) if UPSTREAM_LINE.match(line)]
    if name == "consistent-hash.conf":
        assert len(servers) >= len(upstream_ports), "fewer upstream servers than instances"
        kept = servers[: len(upstream_ports)]
        for i, port in zip(kept, upstream_ports, strict=True):
            addr = lines[i].split()[1]
            lines[i] = lines[i].replace(addr, f"127.0.0.1:{port}")
        lines = [line for i, line in enumerate(lines) if i not in servers[len(kept) :]]
        text = "\n".join(lines)
    else:
        assert text.count(UPSTREAM_SERVER) == 1, f"{name}: expected one `{UPSTREAM_SERVER}`"
        (port,) = upstream_ports
        text = text.replace(UPSTREAM_SERVER, f"server 127.0.0.1:{port}")
    site = tmp / name
    site.write_text(text)
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = tmp / "nginx.conf"
    # As root, nginx's workers would drop to `nobody`, who cannot enter pytest's tmp dirs.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main.write_text(
        f"{user}worker_processes 2;\nevents {{ worker_connections 512; }}\n"
        f"http {{\n    access_log off;\n{temp_paths}\n    include {site};\n}}\n"
    )
    return main


def nginx_args(tmp: Path, conf: Path) -> list[str]:
    assert NGINX is not None
    directives = f"daemon off; pid {tmp / 'nginx.pid'}; error_log stderr;"
    return [NGINX, "-e", "stderr", "-p", str(tmp), "-c", str(conf), "-g", directives]


@contextmanager
def running_nginx(tmp: Path, conf: Path, port: int) -> Iterator[None]:
    tmp.mkdir(parents=True, exist_ok=True)
    with (tmp / "nginx.stderr").open("wb") as err:
        proc = subprocess.Popen(nginx_args(tmp, conf), stderr=err, start_new_session=True)
    try:
        try:
            wait_for_port(port, proc)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError((tmp / "nginx.stderr").read_text()) from exc
        yield
    finally:
        stop(proc)  # SIGTERM: nginx's fast shutdown


@contextmanager
def pixcache_behind(origin_url: str, tmp: Path, count: int = 1) -> Iterator[list[int]]:
    ports = [free_port() for _ in range(count)]
    procs = []
    try:
        for i, port in enumerate(ports):
            # Each instance needs its own admin port (the default is shared by all).
            admin = ["--admin-listen", f"127.0.0.1:{free_port()}"] if HAS_ADMIN else []
            procs.append(start_pixcache(origin_url, tmp / f"cache{i}", port, *admin))
        yield ports
    finally:
        for proc in procs:
            stop(proc)


async def origin_hits(origin_url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as client:
        async with client.get(origin_url + "/_hits") as resp:
            return await resp.json()


async def get(url: str) -> tuple[int, bytes, list[str]]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url) as resp:
            return resp.status, await resp.read(), resp.headers.getall("Cache-Status", [])


@pytest.mark.parametrize(
    "name", ["pixcache-on-miss.conf", "pixcache-front.conf", "consistent-hash.conf"]
)
def test_shipped_config_is_accepted_by_nginx(name: str, tmp_path: Path) -> None:
    conf = render(
        name, tmp_path, free_port(), [free_port(), free_port()][: 2 if "hash" in name else 1]
    )
    result = subprocess.run([*nginx_args(tmp_path, conf), "-t"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


async def test_on_miss_nginx_caches_in_front_and_pixcache_answers_nginx_misses(
    tmp_path: Path,
) -> None:
    size, seed = 300 * 1024, 3
    origin_proc, origin_url = start_origin({"/cat.jpg": (size, seed)})
    expected = pattern_bytes(size, seed)
    try:
        with pixcache_behind(origin_url, tmp_path) as (pix_port,):
            port = free_port()
            first_nginx = tmp_path / "nginx1"
            first_nginx.mkdir()
            conf = render("pixcache-on-miss.conf", first_nginx, port, [pix_port])
            url = f"http://127.0.0.1:{port}/cat.jpg"
            with running_nginx(first_nginx, conf, port):
                status, body, cache_status = await get(url)
                assert status == 200 and body == expected
                # RFC 9211 order: pixcache (nearest the origin) first, then nginx.
                assert cache_status[0].startswith("pixcache; fwd=uri-miss"), cache_status
                assert "stored" in cache_status[0]
                assert cache_status[-1] == "nginx; fwd=uri-miss", cache_status

                status, body, cache_status = await get(url)
                assert status == 200 and body == expected
                assert cache_status[-1] == "nginx; hit", cache_status  # nginx's own cache
                assert cache_status[0].startswith("pixcache;"), cache_status  # still relayed

            # A fresh nginx with an empty cache (a restart, another nginx box): its miss
            # goes to pixcache, which answers from its disk cache.
            await settled(tmp_path / "cache0", entry=True)
            second_nginx = tmp_path / "nginx2"
            second_nginx.mkdir()
            conf = render("pixcache-on-miss.conf", second_nginx, port, [pix_port])
            with running_nginx(second_nginx, conf, port):
                status, body, cache_status = await get(url)
                assert status == 200 and body == expected
                assert cache_status[0].startswith("pixcache; hit"), cache_status
                assert cache_status[-1] == "nginx; fwd=uri-miss", cache_status
        assert (await origin_hits(origin_url)).get("/cat.jpg") == 1
    finally:
        stop(origin_proc)


async def test_front_20_concurrent_requests_through_nginx_make_one_origin_request(
    tmp_path: Path,
) -> None:
    size, seed = 512 * 1024, 8
    # The origin waits 0.5 s before its headers, so all 20 requests overlap the one fill.
    origin_proc, origin_url = start_origin({"/dog.jpg": (size, seed)}, delay=0.5)
    expected = pattern_bytes(size, seed)
    try:
        with pixcache_behind(origin_url, tmp_path) as (pix_port,):
            port = free_port()
            conf = render("pixcache-front.conf", tmp_path, port, [pix_port])
            url = f"http://127.0.0.1:{port}/dog.jpg"
            with running_nginx(tmp_path, conf, port):
                connector = aiohttp.TCPConnector(limit=0, force_close=True)
                async with aiohttp.ClientSession(connector=connector) as client:

                    async def one() -> tuple[int, bytes, list[str]]:
                        async with client.get(url) as resp:
                            cs = resp.headers.getall("Cache-Status", [])
                            return resp.status, await resp.read(), cs

                    results = await asyncio.gather(*(one() for _ in range(20)))
                for status, body, cache_status in results:
                    assert status == 200 and body == expected
                    # Only pixcache's entry: nginx adds none in this topology.
                    assert len(cache_status) == 1 and cache_status[0].startswith("pixcache;")
                assert sum("collapsed" in r[2][0] for r in results) >= 1

                await settled(tmp_path / "cache0", entry=True)
                status, body, cache_status = await get(url)
                assert status == 200 and body == expected
                assert cache_status == [cache_status[0]] and cache_status[0].startswith(
                    "pixcache; hit"
                )
        assert (await origin_hits(origin_url)).get("/dog.jpg") == 1
    finally:
        stop(origin_proc)


async def test_consistent_hash_gives_each_object_one_home_among_two_instances(
    tmp_path: Path,
) -> None:
    paths = [f"/img{i}.jpg" for i in range(16)]
    origin_proc, origin_url = start_origin({p: (4096, i) for i, p in enumerate(paths)})
    try:
        with pixcache_behind(origin_url, tmp_path, count=2) as pix_ports:
            port = free_port()
            conf = render("consistent-hash.conf", tmp_path, port, pix_ports)
            with running_nginx(tmp_path, conf, port):
                for _ in range(3):
                    for i, path in enumerate(paths):
                        status, body, _ = await get(f"http://127.0.0.1:{port}{path}")
                        assert status == 200 and body == pattern_bytes(4096, i)
        hits = await origin_hits(origin_url)
        # Each object was fetched by exactly one instance, once: every repeat went to the
        # instance that already held it.
        assert {p: hits.get(p) for p in paths} == dict.fromkeys(paths, 1)
        homes = [
            sum(1 for _ in (tmp_path / f"cache{i}" / "entries").rglob("*") if _.is_file())
            for i in range(2)
        ]
        assert sum(homes) == len(paths) and all(homes), homes  # both instances got objects
    finally:
        stop(origin_proc)
