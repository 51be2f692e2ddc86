"""Serving: in this process, or with `--workers N` from a pre-fork master that keeps N
serving processes alive.

The master forks before any event loop or thread exists. Each worker binds the listening
address itself with SO_REUSEPORT, so the kernel spreads connections over them, and runs
aiohttp on uvloop. When a worker dies, the master removes its temp files (named by pid)
and starts another; its key locks died with it (storage/keylock.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import replace

import structlog
import uvloop

from proxy import metrics
from proxy.app import serve
from proxy.client_limits import plan_connections
from proxy.config import Config
from storage import Store

log = structlog.get_logger("pixcache.master")

# A worker that dies sooner than this after its start is restarted only after a pause.
CRASH_LOOP_SECONDS = 1.0


def run(config: Config, store: Store) -> None:
    """Serve, in this process or in worker processes. Raises ConfigError when the
    connection limit does not fit the open-files limit."""
    config = replace(config, max_connections=plan_connections(config))
    if config.workers > 1:
        run_workers(config, store)
    else:
        uvloop.run(serve(config, store))


def _worker(config: Config, store: Store, index: int) -> None:
    structlog.contextvars.bind_contextvars(worker=index)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    try:
        uvloop.run(serve(config, store, reuse_port=True))
    except BaseException:  # noqa: BLE001 - report, then leave with a failure status
        log.exception("worker_failed")
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


def run_workers(config: Config, store: Store) -> None:
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started at)
    stopping = False

    def spawn(index: int) -> None:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _worker(config, store, index)
        children[pid] = (index, time.monotonic())

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
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
            time.sleep(CRASH_LOOP_SECONDS)
        spawn(index)
    log.info("master_stopped")
