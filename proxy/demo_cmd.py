"""`pixcache demo`: the bundled sample images served through a cache in a temp directory.

A first try must work on a machine where something already holds 8080 or 8081, so both
listeners take a port the kernel picks unless the user names one (flag or PIXCACHE_*
variable). The URLs are printed only once both listeners accept connections, and the temp
directory is removed however the demo ends: Ctrl-C, SIGTERM, or an error at start."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import FrameType

from proxy.config import ConfigError, build_config
from proxy.logs import configure_logging

SAMPLES = Path(__file__).parent / "samples"
# Any free port on loopback, chosen by the kernel when the listener binds.
ANY_PORT = "127.0.0.1:0"
# The settings a demo takes from its flags or the environment. The origin and the cache
# directory are the demo's own, and a PIXCACHE_CONFIG file written for a real deployment
# (several workers, another origin) is not the demo's to read.
DEMO_SETTINGS = ("listen", "admin_listen", "admin_token", "log_format", "log_level")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    demo = subparsers.add_parser(
        "demo", help="serve the bundled sample images through a cache in a temp directory"
    )
    demo.add_argument(
        "--listen",
        help="HOST:PORT to serve on (default: a free port on 127.0.0.1) [PIXCACHE_LISTEN]",
    )
    demo.add_argument(
        "--admin-listen",
        dest="admin_listen",
        help="HOST:PORT of the admin listener (default: a free port on 127.0.0.1) "
        "[PIXCACHE_ADMIN_LISTEN]",
    )
    return demo


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    # Until the event loop takes SIGTERM over, it ends the demo through the `finally` below
    # (its default action would end the process there and then, leaving the directory).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    cache_dir = Path(tempfile.mkdtemp(prefix="pixcache-demo-"))
    try:
        return _serve(args, environ, cache_dir)
    except ConfigError as exc:
        print(f"pixcache: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not cut the removal short.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        shutil.rmtree(cache_dir, ignore_errors=True)


def _serve(args: argparse.Namespace, environ: Mapping[str, str], cache_dir: Path) -> int:
    demo_environ = {"PIXCACHE_LISTEN": ANY_PORT, "PIXCACHE_ADMIN_LISTEN": ANY_PORT}
    for name in DEMO_SETTINGS:
        value = environ.get("PIXCACHE_" + name.upper())
        if value:
            demo_environ["PIXCACHE_" + name.upper()] = value
    flags = {"origin": f"file://{SAMPLES}", "cache_dir": str(cache_dir)}
    flags |= {name: getattr(args, name) for name in ("listen", "admin_listen")}
    config = build_config({k: v for k, v in flags.items() if v is not None}, demo_environ)
    configure_logging(config.log_format, config.log_level)

    # Imported once the configuration is known, as `pixcache serve` does.
    import uvloop

    from proxy.app import make_store, serve
    from proxy.client_limits import plan_connections

    config = replace(config, max_connections=plan_connections(config))
    store = make_store(config)
    store.prepare()

    def announce(bound: tuple[str, int], admin: tuple[str, int]) -> None:
        base = f"http://{_host_port(bound)}"
        lines = [
            f"pixcache demo: serving {base}/ (the sample images in {SAMPLES})",
            f"  admin listener on {_host_port(admin)}; cache in {cache_dir}, "
            "removed when the demo stops (Ctrl-C)",
            "  try each twice (a miss, then a hit; see Cache-Status):",
        ]
        lines += [f"    curl -sI {base}/{sample.name}" for sample in sorted(SAMPLES.iterdir())]
        print("\n".join(lines), flush=True)

    uvloop.run(serve(config, store, listening=announce))
    return 0


def _host_port(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
