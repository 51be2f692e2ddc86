"""Prometheus metrics (prometheus-client). Defined once here; exposed by the admin listener."""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
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
COALESCED = Counter("pixcache_coalesced_waiters_total", "Requests that joined a fill in flight")
# multiprocess_mode says how the workers' values combine (ignored with one process).
FILLS_IN_FLIGHT = Gauge(
    "pixcache_fills_in_flight", "Origin fills in flight", multiprocess_mode="livesum"
)
CACHE_BYTES = Gauge(
    "pixcache_cache_bytes",
    "Bytes the cache's entries take (from the index)",
    multiprocess_mode="max",
)
CACHE_ENTRIES = Gauge(
    "pixcache_cache_entries", "Entries in the cache (from the index)", multiprocess_mode="max"
)


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
    return registry


def scrape() -> bytes:
    """The text exposition of every metric: of all workers when they share a directory,
    else of this process."""
    return generate_latest(_instance_registry())


def instance_samples() -> list[Sample]:
    """Every sample of the instance: all workers' combined as a scrape combines them."""
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
    total = 0.0
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total
