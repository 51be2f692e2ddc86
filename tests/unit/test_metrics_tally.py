"""metrics.RequestTally: requests counted in plain memory reach the Prometheus metrics
exactly as prometheus-client's own inc() and observe() would have put them there, before a
scrape of this process and, by themselves, within FLUSH_SECONDS."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy import metrics
from proxy.metrics import DURATION_BUCKETS, FLUSH_SECONDS, RequestTally


def _metrics(registry: CollectorRegistry) -> tuple[Counter, Counter, Histogram]:
    requests = Counter("t_requests", "requests", ["cache", "status"], registry=registry)
    body_bytes = Counter("t_body_bytes", "bytes", ["source"], registry=registry)
    durations = Histogram(
        "t_duration_seconds", "seconds", ["cache"], buckets=DURATION_BUCKETS, registry=registry
    )
    return requests, body_bytes, durations


def _scraped(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")  # when each child was made: differs
    }


# Every bound itself (`le` is inclusive), just either side of it, 0, beyond the last.
SECONDS = (
    [0.0, 1e-9, 1000.0]
    + list(DURATION_BUCKETS)
    + [bound * (1 + 1e-9) for bound in DURATION_BUCKETS]
    + [bound * (1 - 1e-9) for bound in DURATION_BUCKETS]
)
# (outcome, status, from the cache, body bytes)
REQUESTS = [("hit", 200, True, 3000), ("uri-miss", 200, False, 5), ("stale", 304, True, 0)]


def test_a_flush_gives_what_inc_and_observe_would_have_given() -> None:
    tallied_registry, reference_registry = CollectorRegistry(), CollectorRegistry()
    tally = RequestTally(*_metrics(tallied_registry))
    requests, body_bytes, durations = _metrics(reference_registry)
    for round_ in range(3):  # flushes add to what earlier ones put there
        for index, seconds in enumerate(SECONDS):
            outcome, status, from_cache, size = REQUESTS[(index + round_) % len(REQUESTS)]
            tally.add(outcome, status, from_cache, size, seconds)
            requests.labels(outcome, str(status)).inc()
            body_bytes.labels("cache" if from_cache else "origin").inc(size)
            durations.labels(outcome).observe(seconds)
        tally.flush()
        expected = _scraped(reference_registry)
        assert _scraped(tallied_registry) == expected
    count = ("t_duration_seconds_count", (("cache", "hit"),))
    assert expected[count] == sum(1 for i in range(len(SECONDS) * 3) if i % 3 == 0)
    tally.flush()  # nothing pending: nothing changes
    assert _scraped(tallied_registry) == expected


def test_a_scrape_counts_every_request_answered_before_it() -> None:
    def hits(text: bytes) -> tuple[float, float]:
        families = {f.name: f for f in text_string_to_metric_families(text.decode())}
        [requests] = [
            s.value
            for s in families["pixcache_requests"].samples
            if s.labels == {"cache": "hit", "status": "200"} and s.name.endswith("_total")
        ]
        [observed] = [
            s.value
            for s in families["pixcache_request_duration_seconds"].samples
            if s.name.endswith("_count") and s.labels == {"cache": "hit"}
        ]
        return requests, observed

    metrics.TALLY.add("hit", 200, True, 10, 0.001)
    before = hits(metrics.scrape())
    for _ in range(7):
        metrics.TALLY.add("hit", 200, True, 10, 0.001)
    after = hits(metrics.scrape())  # no wait: the scrape flushed this process's tally
    assert (after[0] - before[0], after[1] - before[1]) == (7, 7)


async def test_pending_requests_reach_the_metrics_by_themselves() -> None:
    """With several workers, a scrape flushes only the worker that answers it: the others'
    requests must get there by a timer of their own, without another request."""
    registry = CollectorRegistry()
    tally = RequestTally(*_metrics(registry))
    for _ in range(5):
        tally.add("hit", 200, True, 3000, 0.002)
    count = ("t_duration_seconds_count", (("cache", "hit"),))
    total = ("t_requests_total", (("cache", "hit"), ("status", "200")))
    deadline = time.monotonic() + 10 + FLUSH_SECONDS
    while _scraped(registry).get(count) != 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    scraped = _scraped(registry)
    assert scraped[count] == 5 and scraped[total] == 5
    assert scraped["t_body_bytes_total", (("source", "cache"),)] == 15000
