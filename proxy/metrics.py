"""Prometheus metrics (prometheus-client). Defined once here; exposed by the admin listener."""

from __future__ import annotations

from prometheus_client import Counter

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
