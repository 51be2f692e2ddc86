"""Prometheus metrics (prometheus-client). Defined once here; exposed by the admin listener."""

from __future__ import annotations

import asyncio
import os
import platform
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

STORAGE_ERRORS = Counter(
    "pixcache_storage_errors_total",
    "Writes to the cache that failed; the response was served but not stored",
    ["kind"],
)
CORRUPT_ENTRIES = Counter(
    "pixcache_corrupt_entries_total",
    "Entries found corrupt (on a hit or by the scrubber) and removed",
    ["found_by"],
)
EVICTIONS = Counter("pixcache_evictions_total", "Entries removed to stay within bounds", ["why"])
GUARD_REJECTIONS = Counter(
    "pixcache_guard_rejections_total",
    "Images refused (over a limit) or not stored (not decodable) by the image guard",
    ["stage"],
)
REQUESTS = Counter(
    "pixcache_requests_total", "Requests answered, by cache outcome and status", ["cache", "status"]
)
PURGES = Counter("pixcache_purges_total", "Admin purges", ["kind", "mode"])
ORIGIN_SECONDS = Histogram(
    "pixcache_origin_seconds",
    "Time spent per stage of an origin fetch (connect, tls, headers, body)",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ORIGIN_ERRORS = Counter(
    "pixcache_origin_errors_total", "Failed origin fetches, by stage and kind", ["stage", "kind"]
)
BYTES_SERVED = Counter(
    "pixcache_body_bytes_total", "Body bytes sent to clients, by where they came from", ["source"]
)
CLIENT_CLOSES = Counter(
    "pixcache_client_connections_closed_total",
    "Client connections pixcache closed: header timeout, head too large, replaced by a new "
    "connection at the limit, or refused at the limit",
    ["why"],
)
# From a hit sent from memory (well under a millisecond) to a miss of a large body.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip
REQUEST_SECONDS = Histogram(
    "pixcache_request_duration_seconds",
    "Time from a request's arrival to its last byte handed to the kernel, by cache outcome "
    "(the Cache-Status outcome: hit, miss, stale, bypass, uri-miss, ...)",
    ["cache"],
    buckets=DURATION_BUCKETS,
)
COALESCED = Counter("pixcache_coalesced_waiters_total", "Requests that joined a fill in flight")
# multiprocess_mode says how the workers' values combine (ignored with one process).
FILLS_IN_FLIGHT = Gauge(
    "pixcache_fills_in_flight", "Origin fills in flight", multiprocess_mode="livesum"
)
FILL_QUEUE = Gauge(
    "pixcache_fill_queue_depth",
    "Fills waiting for a slot (--max-fills); they count in pixcache_fills_in_flight too",
    multiprocess_mode="livesum",
)
CACHE_BYTES = Gauge(
    "pixcache_cache_bytes",
    "Bytes the cache's entries take (from the index)",
    multiprocess_mode="max",
)
CACHE_ENTRIES = Gauge(
    "pixcache_cache_entries", "Entries in the cache (from the index)", multiprocess_mode="max"
)


@dataclass(frozen=True)
class InstanceFacts:
    """What a scrape reports of the instance as a whole, read when scraped: the same in
    every worker, so no worker's samples need combining. Limits that apply per worker are
    given for all of them together, comparable with the gauges summed across workers."""

    cache_dir: Path
    workers: int = 1
    max_size: int | None = None
    min_free: int = 0
    max_object_size: int | None = None
    max_fills: int = 64
    fill_queue: int = 256
    max_connections: int | None = None  # per worker


def _version() -> str:
    try:
        return metadata.version("pixcache")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


BUILD = {"version": _version(), "python": platform.python_version()}


class _InstanceCollector(Collector):
    """Yields the families of the current InstanceFacts (none before describe_instance)."""

    facts: InstanceFacts | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        facts = self.facts
        info = GaugeMetricFamily(
            "pixcache_build_info", "pixcache's version and Python's; always 1", labels=list(BUILD)
        )
        info.add_metric(list(BUILD.values()), 1)
        yield info
        if facts is None:
            return
        workers = facts.workers
        limits: list[tuple[str, str, int | None]] = [
            ("pixcache_worker_processes", "Worker processes (--workers)", facts.workers),
            ("pixcache_cache_max_bytes", "Most bytes the cache may hold (--max-size)",
             facts.max_size),
            ("pixcache_cache_min_free_bytes",
             "Bytes kept free on the cache's filesystem (--min-free)", facts.min_free),
            ("pixcache_object_max_bytes",
             "Largest object stored; larger ones are proxied (--max-object-size)",
             facts.max_object_size),
            ("pixcache_fills_max", "Fills in flight at once, all workers (--max-fills)",
             facts.max_fills * workers),
            ("pixcache_fill_queue_max",
             "Fills that may wait for a slot, all workers (--fill-queue)",
             facts.fill_queue * workers),
            ("pixcache_client_connections_max",
             "Client connections, all workers (--max-connections)",
             None if facts.max_connections is None else facts.max_connections * workers),
        ]  # fmt: skip
        for name, documentation, value in limits:
            if value is not None:  # a limit not set is not 0: it is left out
                yield GaugeMetricFamily(name, documentation, value=value)
        try:
            st = os.statvfs(facts.cache_dir)
        except OSError:
            return  # no figure rather than a wrong one; readiness reports the directory
        # f_bavail: what an unprivileged process such as pixcache may still write, the
        # figure --min-free is held against.
        yield GaugeMetricFamily(
            "pixcache_cache_filesystem_free_bytes",
            "Bytes free for pixcache on the cache directory's filesystem",
            value=st.f_bavail * st.f_frsize,
        )
        yield GaugeMetricFamily(
            "pixcache_cache_filesystem_size_bytes",
            "Size of the cache directory's filesystem",
            value=st.f_blocks * st.f_frsize,
        )


_INSTANCE = _InstanceCollector()
REGISTRY.register(_INSTANCE)


def describe_instance(facts: InstanceFacts) -> None:
    """Report these limits and this cache directory from now on."""
    _INSTANCE.facts = facts


def across_workers() -> bool:
    """Whether worker processes share their samples (prometheus-client's multiprocess mode,
    set up by the command line when there are several)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _instance_registry() -> CollectorRegistry:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(_INSTANCE)
    return registry


def scrape() -> bytes:
    """The text exposition of every metric: of all workers when they share a directory,
    else of this process."""
    TALLY.flush()
    return generate_latest(_instance_registry())


def instance_samples() -> list[Sample]:
    """Every sample of the instance: all workers' combined as a scrape combines them."""
    TALLY.flush()
    return [sample for family in _instance_registry().collect() for sample in family.samples]


def sample_total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels match `labels`."""
    return sum(
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def process_died(pid: int) -> None:
    """A worker is gone: its live gauges stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


def counter_value(counter: Counter, **labels: str) -> float:
    """The sum of a counter's samples whose labels match `labels`."""
    TALLY.flush()
    total = 0.0
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total


# Every answered request moves two counters and the duration histogram. With several
# workers each update writes to a memory-mapped file (about 2-4 us each, on a hit that
# costs about 50 us in all), so a request only adds to plain numbers in this process's
# memory, and those go into the metrics at most FLUSH_SECONDS after the first of them,
# before any scrape this process answers, and when the worker stops. A scrape is exact as
# of each worker's last flush: its own requests up to now, another worker's at most
# FLUSH_SECONDS behind.
FLUSH_SECONDS = 0.25


class RequestTally:
    """The requests of this process not yet added to the request counter, the body-bytes
    counter and the duration histogram."""

    def __init__(self, requests: Counter, body_bytes: Counter, durations: Histogram) -> None:
        self._requests_metric = requests
        self._bytes_metric = body_bytes
        self._durations_metric = durations
        # Where an observation goes: the histogram's own bounds (ours, then +Inf), which
        # observe() tests with `amount <= bound`, as bisect_left does.
        self._bounds = tuple(durations._upper_bounds)  # noqa: SLF001 - see flush
        self.forget()

    def forget(self) -> None:
        """Drop what is pending (a forked worker starts from nothing of its parent's)."""
        self._requests: dict[tuple[str, int], int] = {}
        self._bytes: dict[bool, int] = {}  # by whether they came from the cache
        # outcome -> [sum of seconds, then the observations in each bucket]
        self._durations: dict[str, list[float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._due = False

    def add(
        self, outcome: str, status: int, from_cache: bool, body_bytes: int, seconds: float
    ) -> None:
        """One answered request; it reaches the metrics by the next flush."""
        key = (outcome, status)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        sent = self._bytes
        sent[from_cache] = sent.get(from_cache, 0) + body_bytes
        row = self._durations.get(outcome)
        if row is None:
            row = self._durations[outcome] = [0.0] * (len(self._bounds) + 1)
        row[0] += seconds
        row[bisect_left(self._bounds, seconds) + 1] += 1
        if not self._due:
            self._flush_soon()

    def _flush_soon(self) -> None:
        self._due = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop that would run a later flush: now, then
            self.flush()
            return
        self._timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Add everything pending to the metrics. The counters go first: a scrape that
        reads a worker's files in the middle of its flush may see a request counted and not
        yet timed, never timed and not counted."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._due = None, False
        requests, self._requests = self._requests, {}
        for (outcome, status), count in requests.items():
            self._requests_metric.labels(outcome, str(status)).inc(count)
        sent, self._bytes = self._bytes, {}
        for from_cache, body_bytes in sent.items():  # 0 too: the sample exists from then on
            self._bytes_metric.labels("cache" if from_cache else "origin").inc(body_bytes)
        durations, self._durations = self._durations, {}
        for outcome, row in durations.items():
            # The histogram has no public call that adds many observations at once; its
            # sum and per-bucket values are what observe() itself increments.
            child = self._durations_metric.labels(outcome)
            child._sum.inc(row[0])  # noqa: SLF001
            buckets = child._buckets  # noqa: SLF001
            for index, count in enumerate(row[1:]):
                if count:
                    buckets[index].inc(count)


TALLY = RequestTally(REQUESTS, BYTES_SERVED, REQUEST_SECONDS)
os.register_at_fork(after_in_child=TALLY.forget)
