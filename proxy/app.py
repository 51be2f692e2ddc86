"""Building and running the server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import structlog
from aiohttp import web
from multidict import CIMultiDict

from proxy import metrics
from proxy.admin import build_admin_app
from proxy.backpressure import FillSlots
from proxy.client_limits import ADMIN_MAX_CONNECTIONS, client_limits
from proxy.config import Config, ConfigError
from proxy.connections import LimitedRunner
from proxy.fill_head import FillSettings
from proxy.fills import Fills
from proxy.guard import Guard, GuardLimits
from proxy.handler import Handler
from proxy.hot import HOT_KEY, HotHits
from proxy.origins import make_origin
from proxy.policy.freshness import RFC_ONLY, Timing, TtlPolicy, time_to_live
from proxy.policy.targeted import effective_headers
from proxy.policy.transitions import PolicyOptions
from proxy.probes import Readiness, add_probe_routes
from proxy.request_key import RequestKeying
from proxy.source_url import source_tags
from proxy.tracing import Tracing, make_tracing
from proxy.warm import WARM, WarmSetup, warm_endpoint
from proxy.wire import keep_header_octets
from storage import SYSTEM_CLOCK, Bounds, Clock, EntryMeta, Scrubber, Store

log = structlog.get_logger("pixcache")

UPKEEP_INTERVAL = 1.0
STORE_KEY = web.AppKey("store", Store)
FILLS_KEY = web.AppKey("fills", Fills)
READINESS_KEY = web.AppKey("readiness", Readiness)
# A listener's bound (host, port).
Address = tuple[str, int]


def build_admin(config: Config, app: web.Application) -> web.Application:
    """The admin application for a proxy application built by build_app."""
    key_target = RequestKeying.of(config).target
    admin = build_admin_app(
        app[STORE_KEY],
        app[FILLS_KEY],
        config.admin_token,
        config.targeted_fields,
        config.ttl_policy,
        readiness=app[READINESS_KEY],
        key_target=key_target,
        source_grammar=config.source_grammar,
    )
    # A warm request waits for its fill, bounded by the fill's own deadlines.
    timeout = config.deadlines.total + config.deadlines.connect + 60
    setup = WarmSetup(
        app[STORE_KEY], config.warm_concurrency, config.warm_rate, timeout, key_target=key_target
    )
    admin[WARM] = setup
    admin.router.add_post("/warm", warm_endpoint)
    return admin


def loopback_url(address: tuple) -> str:
    """http://HOST:PORT to reach a listener bound to `address` from this host."""
    host, port = address[0], address[1]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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


def make_store(config: Config, clock: Clock = SYSTEM_CLOCK) -> Store:
    """The store of an instance; its clock is the one every part of the app reads."""
    bounds = Bounds(config.max_size, config.min_free, config.stale_grace)
    targets, ttl_policy = config.targeted_fields, config.ttl_policy
    return Store(
        config.cache_dir,
        bounds,
        expiry_of=lambda meta: expiry_of(meta, targets, ttl_policy),
        tags_of=lambda meta: (
            tags_of(meta, config.tag_header) + source_tags(meta.key, config.source_grammar)
        ),
        on_corrupt=_count_corrupt,
        on_evict=lambda count, why: metrics.EVICTIONS.labels(why).inc(count),
        check_on_hit_max=config.verify_on_hit_max_size,
        clock=clock,
    )


def tags_of(meta: EntryMeta, field: str) -> tuple[str, ...]:
    """Purge tags of an entry: the words of the origin's Surrogate-Key (or configured) field."""
    values = CIMultiDict(meta.headers).getall(field, ())
    return tuple(word for value in values for word in value.split())


def build_app(config: Config, store: Store, *, tracing: Tracing | None = None) -> web.Application:
    """The application for a prepared store; origin and fills live as long as it does.
    Tracing as the config says, unless one is given (a test's in-memory exporter)."""
    keep_header_octets()
    clock = store.clock  # one clock: fill start times meet purge times, ages meet expiries
    tracing = make_tracing(config.tracing) if tracing is None else tracing
    origin = tracing.wrap_origin(make_origin(config))
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
    settings = FillSettings(config.max_object_size, guard, policy, tracing)
    fills = Fills(
        origin,
        store,
        settings=settings,
        lock_wait=config.deadlines.total,
        slots=FillSlots(config.max_fills, config.fill_queue, config.max_rss, clock),
    )
    metrics.describe_instance(
        metrics.InstanceFacts(
            cache_dir=config.cache_dir,
            workers=config.workers,
            max_size=config.max_size,
            min_free=config.min_free,
            max_object_size=config.max_object_size,
            max_fills=config.max_fills,
            fill_queue=config.fill_queue,
            max_connections=config.max_connections,
        )
    )
    app = web.Application(handler_args={"max_field_size": 16384})
    app[STORE_KEY] = store
    app[FILLS_KEY] = fills
    app[HOT_KEY] = HotHits(config.hot_cache_size, config.targeted_fields, ttl_policy, clock)
    handler = Handler(
        store,
        origin,
        fills,
        policy=policy,
        x_accel_redirect=config.x_accel_redirect,
        unkeyed_fields=config.unkeyed_request_fields,
        hot=app[HOT_KEY],
        tracing=tracing if tracing.enabled else None,
        keying=RequestKeying.of(config),
        clock=clock,
    )
    app[READINESS_KEY] = Readiness(store)
    add_probe_routes(app, app[READINESS_KEY], config.liveness_path, config.readiness_path)
    app.router.add_route("*", "/{tail:.*}", tracing.serve(handler.__call__))

    async def background(app: web.Application):  # noqa: ANN202 - aiohttp cleanup context
        await origin.prepare()
        task = asyncio.get_running_loop().create_task(upkeep(store, config))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fills.shutdown()
        await origin.close()
        guard.close()
        app[HOT_KEY].close()
        # Every request is answered: what they counted since the last flush goes into the
        # metrics now, since a worker leaves by os._exit (no atexit).
        metrics.TALLY.flush()
        await store.flush_uses()
        await asyncio.to_thread(tracing.close)  # the last export may wait for its collector

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
            await store.clock.sleep(UPKEEP_INTERVAL)
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

    await Scrubber(store.layout, bytes_per_second, found, clock=store.clock).run()


async def serve(
    config: Config,
    store: Store,
    *,
    reuse_port: bool = False,
    listening: Callable[[Address, Address], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, from a store that `Store.prepare` has readied.
    `listening` is called with the addresses both listeners are bound to (a port 0 in the
    configuration is the one the kernel picked) once both accept connections. A port that
    cannot be bound raises ConfigError naming its setting."""
    # Signal handlers first: a signal that comes as soon as the port listens is handled.
    stop = asyncio.Event()
    hurry = asyncio.Event()  # SIGINT once stopping: end the shutdown delay now
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: hurry.set() if stop.is_set() else stop.set())
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
    admin_app = build_admin(config, app)
    admin_runner = LimitedRunner(
        admin_app,
        replace(limits, max_connections=ADMIN_MAX_CONNECTIONS),
        access_log=None,
        handle_signals=False,
    )
    await admin_runner.setup()
    try:
        site = web.TCPSite(
            runner,
            config.host,
            config.port,
            reuse_address=True,
            reuse_port=reuse_port,
            backlog=1024,
        )
        await _bind(site, "listen", config.host, config.port)
        admin_app[WARM].target = loopback_url(runner.addresses[0])
        admin_site = web.TCPSite(
            admin_runner,
            config.admin_host,
            config.admin_port,
            reuse_address=True,
            reuse_port=reuse_port,
        )
        await _bind(admin_site, "admin_listen", config.admin_host, config.admin_port)
        bound, admin_bound = _bound_address(runner), _bound_address(admin_runner)
        log.info(
            "listening",
            host=bound[0],
            port=bound[1],
            admin=f"{admin_bound[0]}:{admin_bound[1]}",
            origin=config.origin.base_url,
            cache_dir=str(config.cache_dir),
            temp_files_swept=store.swept,
        )
        if listening is not None:
            listening(bound, admin_bound)
        await stop.wait()
        await drain(app[READINESS_KEY], hurry, config.shutdown_delay)
    finally:
        log.info("stopping")
        await admin_runner.cleanup()
        await runner.cleanup()


async def drain(readiness: Readiness, hurry: asyncio.Event, delay: float) -> None:
    """After the first SIGTERM or SIGINT: readiness says 503 while everything else is
    served as before, for `delay` seconds, so load balancers stop sending first. A SIGINT
    (a second Ctrl-C) ends the wait; a repeated SIGTERM does not: a service manager may
    send it to every process of the group, and the master passes it on too."""
    readiness.draining = True
    if delay <= 0:
        return
    log.info("draining", seconds=delay)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(hurry.wait(), delay)


async def _bind(site: web.TCPSite, setting: str, host: str, port: int) -> None:
    """Start a listener; an address in use (or not ours) is the setting's fault."""
    try:
        await site.start()
    except OSError as exc:
        # asyncio puts the address into the message; the errno's text is the reason.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(setting, f"cannot listen on {host}:{port}: {reason}") from None


def _bound_address(runner: web.BaseRunner) -> Address:
    host, port = runner.addresses[0][:2]
    return str(host), int(port)
