"""The shipped nginx configs installed as a user of Debian's or Ubuntu's nginx package installs
them: into conf.d/ of the package's /etc/nginx, with its default site (sites-enabled/default,
`listen 80 default_server`) still enabled, and no /var/cache/nginx. The layout is rebuilt
under a temp dir standing for `/`, the package's own files when they are installed, and run
by the real nginx binary."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.commits import settled
from tests.fake_origin import pattern_bytes
from tests.system.procs import REPO, free_port, start_origin, start_pixcache, stop, wait_for_port
from tests.system.test_nginx import NGINX

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="no nginx binary found (.ci/run installs Debian's nginx-light)"
)

ETC_NGINX = Path("/etc/nginx")
PACKAGE_MODULES = Path("/usr/share/nginx/modules")
# What the package's nginx.conf and default site say where the installed ones are missing:
# the parts that matter here, in the package's order.
STOCK_NGINX_CONF = """\
user www-data;
worker_processes auto;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
include /etc/nginx/modules-enabled/*.conf;
events { worker_connections 768; }
http {
    sendfile on;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    gzip on;
    include /etc/nginx/conf.d/*.conf;
    include /etc/nginx/sites-enabled/*;
}
"""
STOCK_DEFAULT_SITE = """\
server {
    listen 80 default_server;
    listen [::]:80 default_server;
    root /var/www/html;
    index index.html index.htm index.nginx-debian.html;
    server_name _;
    location / { try_files $uri $uri/ =404; }
}
"""
# The directories the package creates, or that every Debian system has. Not /var/cache/nginx.
STOCK_DIRS = ("etc/nginx/conf.d", "etc/nginx/sites-available", "etc/nginx/sites-enabled",
              "etc/nginx/modules-enabled", "var/log/nginx", "var/lib/nginx", "var/cache",
              "var/www/html", "run")  # fmt: skip
# The package's compiled-in temp paths (nginx -V: --http-*-temp-path=/var/lib/nginx/...),
# which no path in its files names, so that nginx does not touch the real /var/lib/nginx.
TEMP_KINDS = {"client_body": "body", "proxy": "proxy", "fastcgi": "fastcgi",
              "uwsgi": "uwsgi", "scgi": "scgi"}  # fmt: skip
ABSOLUTE = re.compile(r"(?<=[\s'\"])/(etc|var|run)/")
PORT_80 = re.compile(r"^(\s*)listen\s+80\b", re.M)
IPV6_LISTEN = re.compile(r"^\s*listen\s+\[::\]:80\b.*\n", re.M)
# What a user changes: the upstream, to where pixcache listens (README, docs/deployment.md).
UPSTREAM = "pixcache:8080"


def stock_file(path: str, fallback: str) -> str:
    """The installed package's file when it looks like Debian's, else our summary of it."""
    installed = ETC_NGINX / path
    if installed.is_file():
        text = installed.read_text()
        if path != "nginx.conf" or "sites-enabled/*" in text:
            return text
    return fallback


def to_test_system(text: str, root: Path, port: int) -> str:
    """A file as the test's system sees it: absolute paths under `root`, port 80 on
    127.0.0.1:`port` (IPv6 dropped: only 127.0.0.1 is ours), workers as this user."""
    text = ABSOLUTE.sub(lambda m: f"{root}/{m.group(1)}/", text)
    text = IPV6_LISTEN.sub("", text)
    text = PORT_80.sub(lambda m: f"{m.group(1)}listen 127.0.0.1:{port}", text)
    # As root, workers would run as www-data, who cannot enter pytest's temp dirs.
    user = "user root;" if os.geteuid() == 0 else ""
    return re.sub(r"^user\s+[^;]+;", user, text, count=1, flags=re.M)


def debian_root(root: Path, port: int) -> Path:
    """Debian's nginx as installed, under `root`. Returns its nginx.conf."""
    for directory in STOCK_DIRS:
        (root / directory).mkdir(parents=True, exist_ok=True)
    etc = root / "etc" / "nginx"
    conf = to_test_system(stock_file("nginx.conf", STOCK_NGINX_CONF), root, port)
    temp_paths = "".join(
        f"\n    {kind}_temp_path {root}/var/lib/nginx/{name};" for kind, name in TEMP_KINDS.items()
    )
    conf = conf.replace("http {", "http {" + temp_paths, 1)
    (etc / "nginx.conf").write_text(conf)
    mime = ETC_NGINX / "mime.types"
    (etc / "mime.types").write_text(
        mime.read_text() if mime.is_file() else "types { image/jpeg jpg; }\n"
    )
    # The package's modules-enabled/ load modules by paths relative to nginx's prefix
    # (/usr/share/nginx, whose modules/ leads to the .so files), which -p moves to `root`.
    if PACKAGE_MODULES.is_dir():
        (root / "modules").symlink_to(PACKAGE_MODULES)
    modules = ETC_NGINX / "modules-enabled"
    for module in sorted(modules.glob("*.conf")) if modules.is_dir() else []:
        if module.exists():  # a dangling link is a module the package no longer has
            (etc / "modules-enabled" / module.name).write_text(module.read_text())
    default = stock_file("sites-available/default", STOCK_DEFAULT_SITE)
    (etc / "sites-available" / "default").write_text(to_test_system(default, root, port))
    (etc / "sites-enabled" / "default").symlink_to("../sites-available/default")
    return etc / "nginx.conf"


def install(name: str, root: Path, port: int, pixcache_port: int) -> None:
    """What a user does: the shipped file into conf.d/, the upstream set to pixcache."""
    text = (REPO / "nginx" / name).read_text()
    assert f"server {UPSTREAM}" in text, f"{name}: the upstream a user changes"
    text = text.replace(UPSTREAM, f"127.0.0.1:{pixcache_port}")
    (root / "etc" / "nginx" / "conf.d" / "pixcache.conf").write_text(
        to_test_system(text, root, port)
    )


def nginx_command(root: Path, conf: Path, *extra: str) -> list[str]:
    assert NGINX is not None
    return [NGINX, "-p", f"{root}/", "-c", str(conf), "-e", "stderr", *extra]


def check(root: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        nginx_command(root, conf, "-t"), capture_output=True, text=True, timeout=60, check=False
    )


@contextmanager
def running_nginx(root: Path, conf: Path, port: int) -> Iterator[None]:
    with (root / "nginx.stderr").open("ab") as err:
        proc = subprocess.Popen(
            nginx_command(root, conf, "-g", "daemon off;"), stderr=err, start_new_session=True
        )
    try:
        try:
            wait_for_port(port, proc)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError((root / "nginx.stderr").read_text()) from exc
        yield
    finally:
        stop(proc)  # waits for the master, which holds the port, to exit


async def get(url: str) -> tuple[int, bytes, list[str]]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url) as resp:
            return resp.status, await resp.read(), resp.headers.getall("Cache-Status", [])


async def origin_hits(origin_url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as client:
        async with client.get(origin_url + "/_hits") as resp:
            return await resp.json()


@pytest.mark.parametrize(
    "name",
    [
        "pixcache-front.conf",
        "pixcache-on-miss.conf",
        "pixcache-x-accel.conf",
        "consistent-hash.conf",
    ],
)
def test_shipped_config_passes_nginx_t_in_the_debian_layout(name: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    conf = debian_root(root, free_port())
    text = (REPO / "nginx" / name).read_text()
    if f"server {UPSTREAM}" in text:
        install(name, root, free_port(), free_port())
    else:  # a fleet of upstreams, each one written in; nginx -t does not connect to them
        fleet = to_test_system(text, root, free_port())
        (root / "etc/nginx/conf.d/pixcache.conf").write_text(fleet)
    result = check(root, conf)
    assert result.returncode == 0, result.stderr
    # The on-miss cache is in a directory nginx could create: its parent exists on Debian.
    assert not (root / "var" / "cache" / "nginx").exists()


@pytest.mark.parametrize(
    "name", ["pixcache-front.conf", "pixcache-on-miss.conf", "pixcache-x-accel.conf"]
)
async def test_requests_reach_pixcache_with_debians_default_site_enabled(
    name: str, tmp_path: Path
) -> None:
    size, seed = 200 * 1024, 5
    origin_proc, origin_url = start_origin({"/cat.jpg": (size, seed)})
    expected = pattern_bytes(size, seed)
    root, port, pixcache_port = tmp_path / "root", free_port(), free_port()
    conf = debian_root(root, port)
    url = f"http://127.0.0.1:{port}/cat.jpg"
    try:
        # The stock layout alone: its default site answers every request on the port.
        with running_nginx(root, conf, port):
            status, _, cache_status = await get(url)
            assert status == 404 and cache_status == []

        # pixcache where the x-accel config's alias looks for its bodies (the default
        # /var/cache/pixcache, under this system's root).
        cache_dir = root / "var" / "cache" / "pixcache"
        extra = ["--x-accel-redirect", "/_pixcache/bodies/"] if "x-accel" in name else []
        pixcache = start_pixcache(origin_url, cache_dir, pixcache_port, *extra)
        try:
            install(name, root, port, pixcache_port)
            result = check(root, conf)
            assert result.returncode == 0, result.stderr
            with running_nginx(root, conf, port):
                status, body, cache_status = await get(url)
                assert (status, body) == (200, expected)
                assert cache_status[0].startswith("pixcache; fwd=uri-miss"), cache_status
                await settled(cache_dir, entry=True)
                status, body, cache_status = await get(url)
                assert (status, body) == (200, expected)
                if "on-miss" in name:  # nginx's own cache, in front, answers it now
                    assert cache_status[-1] == "nginx; hit", cache_status
                else:
                    assert cache_status[0].startswith("pixcache; hit"), cache_status
        finally:
            stop(pixcache)
        assert (await origin_hits(origin_url)).get("/cat.jpg") == 1
    finally:
        stop(origin_proc)


def test_default_site_is_enabled_in_the_layout(tmp_path: Path) -> None:
    """The layout the tests above use is Debian's: the default site is enabled and is the
    port's default_server, conf.d is included before sites-enabled."""
    root = tmp_path / "root"
    conf = debian_root(root, free_port())
    text = conf.read_text()
    assert text.index("conf.d/*.conf") < text.index("sites-enabled/*")
    site = (root / "etc/nginx/sites-enabled/default").read_text()
    assert "default_server" in site and "server_name _;" in site
