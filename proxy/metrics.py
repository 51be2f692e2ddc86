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
