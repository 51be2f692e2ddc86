"""Building and running the server."""

from __future__ import annotations

import asyncio
import signal

import structlog
import uvloop
from aiohttp import web

from proxy.config import Config
from proxy.fill import Fills
from proxy.handler import Handler
from proxy.origins import make_origin
from storage.store import Store

log = structlog.get_logger("pixcache")


def build_app(config: Config, store: Store) -> web.Application:
    """The application for a prepared store; origin and fills live as long as it does."""
    origin = make_origin(config)
    fills = Fills(origin, store)
    app = web.Application(handler_args={"max_field_size": 16384})
    app.router.add_route("*", "/{tail:.*}", Handler(store, origin, fills).__call__)

    async def close(_: web.Application) -> None:
        await fills.shutdown()
        await origin.close()

    app.on_cleanup.append(close)
    return app


async def serve(config: Config, store: Store) -> None:
    """Serve until SIGTERM or SIGINT, from a store that `Store.prepare` has readied."""
    app = build_app(config, store)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True, backlog=1024)
    await site.start()
    log.info(
        "listening",
        host=config.host,
        port=config.port,
        origin=config.origin.base_url,
        cache_dir=str(config.cache_dir),
        temp_files_swept=store.swept,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await runner.cleanup()


def run(config: Config, store: Store) -> None:
    uvloop.run(serve(config, store))
