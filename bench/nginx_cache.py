"""A real nginx caching an origin with proxy_cache, for bench/compare.py: the figure pixcache
is held against. It runs as the current user, listens on 127.0.0.1 only, and keeps its
config, cache, temp files and pid file under one work directory."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.system.procs import free_port, stop, wait_for_port

NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in NGINX_PATHS if os.access(p, os.X_OK)), None)


def render(work: Path, port: int, origin_port: int, workers: int) -> Path:
    """nginx.conf for a cache in front of the origin, the way one would deploy it:
    sendfile on, keep-alive connections to the origin, one fetch per key (proxy_cache_lock)
    and the origin's Cache-Control deciding freshness. Not `tcp_nopush on`: with sendfile
    on loopback it held the end of each 100 KiB response for a delayed ACK (p50 44 ms), and
    nginx served 2000-2500 req/s at a tenth of a core instead of over 25000."""
    temp_paths = "\n".join(f"    {kind}_temp_path {work / kind};" for kind in TEMP_KINDS)
    # As root, workers would otherwise switch to `nobody`, who cannot enter the work dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = work / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes {workers};
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp_paths}
    sendfile on;
    keepalive_requests 100000;
    proxy_cache_path {work / "cache"} levels=1:2 keys_zone=bench:32m inactive=1h
                     use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""
    )
    return conf


@contextmanager
def running(work: Path, origin_port: int, workers: int = 1) -> Iterator[tuple[int, str]]:
    """Start nginx with a fresh cache under `work`: yields (master pid, base URL)."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("no nginx binary found (Debian: apt-get install nginx-light)")
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = render(work, port, origin_port, workers)
    directives = f"daemon off; pid {work / 'nginx.pid'}; error_log {work / 'error.log'} warn;"
    argv = [binary, "-e", str(work / "error.log"), "-p", str(work), "-c", str(conf)]
    proc = subprocess.Popen([*argv, "-g", directives], start_new_session=True)
    try:
        try:
            wait_for_port(port, proc)
        except (RuntimeError, TimeoutError) as exc:
            log = (work / "error.log").read_text() if (work / "error.log").exists() else ""
            raise RuntimeError(f"nginx did not start: {exc}\n{log}") from exc
        yield proc.pid, f"http://127.0.0.1:{port}"
    finally:
        stop(proc)  # SIGTERM: nginx's fast shutdown
