"""Building and running the server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import replace
from pathlib import Path

import structlog
from aiohttp import web
from multidict import CIMultiDict

from proxy import metrics
from proxy.admin import build_admin_app
from proxy.client_limits import ADMIN_MAX_CONNECTIONS, client_limits
from proxy.config import Config
from proxy.connections import LimitedRunner
from proxy.fill import FillSettings
from proxy.fills import Fills
from proxy.guard import Guard, GuardLimits
from proxy.handler import Handler
from proxy.hot import HOT_KEY, HotHits
from proxy.origins import make_origin
from proxy.policy.freshness import RFC_ONLY, Timing, TtlPolicy, time_to_live
from proxy.policy.targeted import effective_headers
from proxy.policy.transitions import PolicyOptions
from proxy.wire import keep_header_octets
from storage import Bounds, EntryMeta, Scrubber, Store

log = structlog.get_logger("pixcache")

UPKEEP_INTERVAL = 1.0
STORE_KEY = web.AppKey("store", Store)
FILLS_KEY = web.AppKey("fills", Fills)


def build_admin(config: Config, app: web.Application) -> web.Application:
    """The admin application for a proxy application built by build_app."""
    return build_admin_app(
        app[STORE_KEY],
        app[FILLS_KEY],
        config.admin_token,
        config.targeted_fields,
        config.ttl_policy,
    )


def expiry_of(
    meta: EntryMeta, targets: tuple[str, ...] = (), ttl_policy: TtlPolicy = RFC_ONLY
) -> float:
    """When an entry turns stale (RFC 9111 §4.2); Vary markers never do."""
    if meta.is_vary_marker:
        return float("inf")
    timing = Timing(meta.request_time, meta.response_time)
    headers = effective_headers(CIMultiDict(meta.headers), targets)
    ttl = time_to_live(meta.status, headers, timing, meta.response_time, ttl_policy=ttl_policy)
    return meta.response_time + ttl


def _count_corrupt(key_hash: str, reason: str) -> None:
    metrics.CORRUPT_ENTRIES.labels("hit").inc()


def make_store(config: Config) -> Store:
    bounds = Bounds(config.max_size, config.min_free, config.stale_grace)
    targets, ttl_policy = config.targeted_fields, config.ttl_policy
    return Store(
        config.cache_dir,
        bounds,
        expiry_of=lambda meta: expiry_of(meta, targets, ttl_policy),
        tags_of=lambda meta: tags_of(meta, config.tag_header),
        on_corrupt=_count_corrupt,
        on_evict=lambda count, why: metrics.EVICTIONS.labels(why).inc(count),
        check_on_hit_max=config.verify_on_hit_max_size,
    )


def tags_of(meta: EntryMeta, field: str) -> tuple[str, ...]:
    """Purge tags of an entry: the words of the origin's Surrogate-Key (or configured) field."""
    values = CIMultiDict(meta.headers).getall(field, ())
    return tuple(word for value in values for word in value.split())


def build_app(config: Config, store: Store) -> web.Application:
    """The application for a prepared store; origin and fills live as long as it does."""
    keep_header_octets()
    origin = make_origin(config)
    guard = Guard(
        GuardLimits(
            mode=config.verify_images,
            max_width=config.max_image_width,
            max_height=config.max_image_height,
            max_pixels=config.max_image_pixels,
            max_frames=config.max_image_frames,
            refuse_invalid=config.refuse_invalid_images,
            probe_bytes=config.image_probe_bytes,
            probe_seconds=config.image_probe_seconds,
        )
    )
    ttl_policy = config.ttl_policy  # built once: every lifetime is bounded by the same one
    # What the rules read of the config, built once for the handler and every fill.
    policy = PolicyOptions(config.targeted_fields, config.grace, ttl_policy)
    settings = FillSettings(config.max_object_size, guard, policy)
    fills = Fills(
        origin,
        store,
        settings=settings,
        lock_wait=config.deadlines.total,
        max_fills=config.max_fills,
        fill_queue=config.fill_queue,
        max_rss=config.max_rss,
    )
    app = web.Application(handler_args={"max_field_size": 16384})
    app[STORE_KEY] = store
    app[FILLS_KEY] = fills
    app[HOT_KEY] = HotHits(config.hot_cache_size, config.targeted_fields, ttl_policy)
    handler = Handler(
        store,
        origin,
        fills,
        policy=policy,
        x_accel_redirect=config.x_accel_redirect,
        unkeyed_fields=config.unkeyed_request_fields,
        hot=app[HOT_KEY],
    )
    app.router.add_route("*", "/{tail:.*}", handler.__call__)

    async def background(app: web.Application):  # noqa: ANN202 - aiohttp cleanup context
        task = asyncio.get_running_loop().create_task(upkeep(store, config))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fills.shutdown()
        await origin.close()
        guard.close()
        app[HOT_KEY].close()
        await store.flush_uses()

    app.cleanup_ctx.append(background)
    return app


async def upkeep(store: Store, config: Config) -> None:
    """Every worker writes its LRU uses; one of them (whoever holds the upkeep lock, taken
    over if it dies) rebuilds the index at start, evicts and runs the scrubber."""
    upkeep_lock = store.upkeep_lock()
    scrubber: asyncio.Task[None] | None = None
    reconciled = False
    try:
        while True:
            try:
                await store.flush_uses()
                if upkeep_lock.held or upkeep_lock.try_acquire():
                    if not reconciled:
                        added = await store.reconcile()
                        reconciled = True
                        log.info("index_rebuilt", added=added)
                    await store.maintain()
                    metrics.CACHE_BYTES.set(await store.total_size())
                    metrics.CACHE_ENTRIES.set(await store.entry_count())
                    if scrubber is None and config.scrub_rate:
                        scrubber = asyncio.get_running_loop().create_task(
                            scrub(store, config.scrub_rate)
                        )
            except Exception:  # noqa: BLE001 - upkeep must outlive any one failure
                log.exception("upkeep_failed")
            await asyncio.sleep(UPKEEP_INTERVAL)
    finally:
        if scrubber is not None:
            scrubber.cancel()
        upkeep_lock.release()


async def scrub(store: Store, bytes_per_second: int) -> None:
    loop = asyncio.get_running_loop()
    forgetting: set[asyncio.Task[None]] = set()

    def found(path: Path, reason: str) -> None:
        metrics.CORRUPT_ENTRIES.labels("scrubber").inc()
        store.corrupt_found += 1
        log.warning("corrupt_entry", found_by="scrubber", path=str(path), reason=reason)
        task = loop.create_task(store.forget(path.name))  # the scrubber removed the file
        forgetting.add(task)
        task.add_done_callback(forgetting.discard)

    await Scrubber(store.layout, bytes_per_second, found).run()


async def serve(config: Config, store: Store, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM or SIGINT, from a store that `Store.prepare` has readied."""
    # Signal handlers first: a signal that comes as soon as the port listens is handled.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Logs go to stdout (no file to reopen), and the configuration is frozen at start:
    # SIGHUP has nothing it could safely reload, and says so instead of killing us.
    loop.add_signal_handler(
        signal.SIGHUP, lambda: log.info("sighup", reloaded="nothing; restart to change settings")
    )
    app = build_app(config, store)
    limits = client_limits(config)
    # On SIGTERM: stop accepting, let requests in flight finish within the grace, then
    # cancel unfinished fills (their temp files are removed) and exit 0.
    runner = LimitedRunner(
        app,
        limits,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=config.shutdown_grace,
    )
    await runner.setup()
    site = web.TCPSite(
        runner, config.host, config.port, reuse_address=True, reuse_port=reuse_port, backlog=1024
    )
    await site.start()
    admin_runner = LimitedRunner(
        build_admin(config, app),
        replace(limits, max_connections=ADMIN_MAX_CONNECTIONS),
        access_log=None,
        handle_signals=False,
    )
    await admin_runner.setup()
    admin_site = web.TCPSite(
        admin_runner,
        config.admin_host,
        config.admin_port,
        reuse_address=True,
        reuse_port=reuse_port,
    )
    await admin_site.start()
    log.info(
        "listening",
        host=config.host,
        port=config.port,
        admin=f"{config.admin_host}:{config.admin_port}",
        origin=config.origin.base_url,
        cache_dir=str(config.cache_dir),
        temp_files_swept=store.swept,
    )
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await admin_runner.cleanup()
        await runner.cleanup()
