"""Serving: in this process, or with `--workers N` from a pre-fork master that keeps N
serving processes alive.

The master forks before any event loop or thread exists. Each worker binds the listening
address itself with SO_REUSEPORT, so the kernel spreads connections over them, and runs
aiohttp on uvloop. When a worker dies, the master removes its temp files (named by pid)
and starts another; its key locks died with it (storage/keylock.py)."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import sys
import time
from dataclasses import replace

import structlog
import uvloop

from proxy import metrics
from proxy.app import serve
from proxy.client_limits import plan_connections
from proxy.config import Config, ConfigError
from storage import Store

log = structlog.get_logger("pixcache.master")

# A worker that dies sooner than this after its start is restarted only after a pause.
CRASH_LOOP_SECONDS = 1.0
# What the master passes on to its workers (SIGHUP) or stops them with (the others).
MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run(config: Config, store: Store) -> None:
    """Serve, in this process or in worker processes. Raises ConfigError when the
    connection limit does not fit the open-files limit, or an address cannot be listened on."""
    config = replace(config, max_connections=plan_connections(config))
    # What exists by now (modules, classes, the configuration) lives as long as the
    # process: kept out of the collector, no full collection walks it again (nor the one
    # at exit), and forked workers leave the pages they share with the master unwritten
    # (Python's gc.freeze documentation).
    gc.freeze()
    if config.workers > 1:
        run_workers(config, store)
    else:
        uvloop.run(serve(config, store))


def _worker(config: Config, store: Store, index: int) -> None:
    structlog.contextvars.bind_contextvars(worker=index)
    for sig in MASTER_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)  # blocked by `spawn`
    try:
        uvloop.run(serve(config, store, reuse_port=True))
    except BaseException:  # noqa: BLE001 - report, then leave with a failure status
        log.exception("worker_failed")
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


def _check_bindable(setting: str, host: str, port: int) -> None:
    """Each worker binds for itself, so an address another program holds would make every
    worker fail as soon as it starts, and the master restart them forever. The master binds
    it first as the workers will (SO_REUSEADDR, SO_REUSEPORT) and lets go, so that such a
    start fails at once, naming the setting. (Port 0 is each worker's own pick.)"""
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(setting, f"cannot listen on {host}:{port}: {reason}") from None


def run_workers(config: Config, store: Store) -> None:
    _check_bindable("listen", config.host, config.port)
    _check_bindable("admin_listen", config.admin_host, config.admin_port)
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started at)
    stopping = False

    def spawn(index: int) -> None:
        """Start worker `index`, unless told to stop. The master's signals wait meanwhile:
        one that came between the fork and the child's record would pass the child over
        (and the master would wait for it forever), and the child must never run the
        master's handlers."""
        signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            if stopping:
                return
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _worker(config, store, index)
            children[pid] = (index, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:  # the same signal: a SIGINT also ends a shutdown delay
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def forward_hup(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, forward_hup)
    for index in range(config.workers):
        spawn(index)
    log.info("master_started", workers=config.workers, pid=os.getpid())
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index, started = children.pop(pid)
        swept = store.layout.sweep_temp_files(pid=pid)
        metrics.process_died(pid)
        if stopping:
            continue
        log.warning(
            "worker_died",
            worker=index,
            pid=pid,
            status=os.waitstatus_to_exitcode(status),
            temp_files_swept=swept,
        )
        if time.monotonic() - started < CRASH_LOOP_SECONDS:
            time.sleep(CRASH_LOOP_SECONDS)  # a stop meanwhile: `spawn` starts no worker
        spawn(index)
    log.info("master_stopped")
