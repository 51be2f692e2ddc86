"""Warm-up (POST /warm on the admin listener): fill a list of request paths ahead of clients.

Each path is requested from this instance's own serving listener, on loopback, like any
client's request: the fill is the normal one (coalesced with clients' requests for the same
key across workers, checked by the image guard, stored within the store's bounds). What the
response's Cache-Status says is the outcome: already cached (a hit), filled, refreshed, or
failed with the reason.

Warm-up never pushes the hot set out. It stops (the rest is reported as skipped) once the
store is at its size bound or its free-space minimum, and each entry it fills is ranked
least recently used, so any eviction later takes warmed entries before entries clients used.

Without `refresh`, requests accept a stored entry however stale (RFC 9111 §5.2.1.2
max-stale), so a soft-purged entry counts as already cached; with it, a stale entry is
revalidated or fetched again.

The request body is JSON: {"paths": ["/a.jpg", ...], "accept": ["image/avif,*/*", ...],
"refresh": false}. Each path is warmed once per Accept value given (none: no Accept field);
with format classes on, the serving listener reduces each value to its class, so one value
per class warms every variant. The response streams one JSON line per outcome, then one line
with the summary."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import http_sf
import structlog
from aiohttp import web
from yarl import URL

from storage import Store, rank_least_recent

log = structlog.get_logger("pixcache.warm")

MOST_PATHS = 10_000  # per request; `pixcache warm` sends longer lists in batches
# Each path is warmed once per Accept value: the jobs are their product, built at once.
# A few classes (avif, webp, jxl, the rest) need a few values.
MOST_ACCEPTS = 16
# After a fill's body has arrived, how long to look for its index row (the commit comes
# just after the last byte) to rank it least recently used.
RANK_POLLS = 40
HEAD_ALLOWANCE = 4096  # bytes an entry's head may add to its body, for the size bound
RANK_POLL_PAUSE = 0.05


@dataclass
class WarmSetup:
    store: Store
    concurrency: int
    rate: float  # requests started per second; 0: no bound but concurrency
    request_timeout: float  # one warm request, body included
    target: str | None = None  # http://HOST:PORT of the serving listener, once it listens
    # The key rule (proxy/request_key.py): the target a warmed entry is stored under.
    key_target: Callable[[str], str] = str


WARM = web.AppKey("warm", WarmSetup)


@dataclass(frozen=True)
class Outcome:
    path: str
    accept: str | None
    result: str  # filled, refreshed, cached, failed, skipped
    reason: str = ""

    def line(self) -> bytes:
        fields = {"path": self.path, "accept": self.accept, "result": self.result}
        if self.reason:
            fields["reason"] = self.reason
        return json.dumps(fields).encode() + b"\n"


def path_problem(text: str) -> str | None:
    """Why `text` is not a request path a warm-up can fill, or None."""
    if not text.startswith("/"):
        return "must be a request path starting with /"
    if text.startswith("//"):
        return "must be a request path, not a scheme-relative URL"
    if not text.isprintable() or any(c.isspace() for c in text) or not text.isascii():
        return "must be printable ASCII without spaces (percent-encode the rest)"
    if "#" in text:
        return "may not hold a fragment (#)"
    return None


def parse_body(data: Any) -> tuple[list[str], list[str | None], bool]:
    """(paths, Accept values, refresh) from the JSON body; ValueError names what is wrong."""
    if not isinstance(data, dict):
        raise ValueError('the body must be a JSON object like {"paths": ["/a.jpg"]}')
    unknown = set(data) - {"paths", "accept", "refresh"}
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]!r}")
    paths = data.get("paths")
    if not isinstance(paths, list) or not paths:
        raise ValueError("paths must be a non-empty list of request paths")
    if len(paths) > MOST_PATHS:
        raise ValueError(f"paths holds {len(paths)} items; at most {MOST_PATHS} per request")
    for index, path in enumerate(paths):
        problem = "must be a string" if not isinstance(path, str) else path_problem(path)
        if problem:
            raise ValueError(f"paths[{index}] {path!r}: {problem}")
    accepts = data.get("accept") or [None]
    if not isinstance(accepts, list) or not all(
        value is None or (isinstance(value, str) and value.isprintable()) for value in accepts
    ):
        raise ValueError("accept must be a list of Accept field values")
    if len(accepts) > MOST_ACCEPTS:
        raise ValueError(f"accept holds {len(accepts)} items; at most {MOST_ACCEPTS} Accept values")
    refresh = data.get("refresh", False)
    if not isinstance(refresh, bool):
        raise ValueError("refresh must be true or false")
    return paths, accepts, refresh


async def warm_endpoint(request: web.Request) -> web.StreamResponse:
    setup = request.app[WARM]
    if setup.target is None:
        return web.json_response({"error": "the serving listener is not up yet"}, status=503)
    try:
        paths, accepts, refresh = parse_body(await request.json())
    except (ValueError, UnicodeDecodeError) as exc:
        return web.json_response({"error": f"warm: {exc}"}, status=400)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    jobs = [(path, accept) for path in paths for accept in accepts]
    await response.write(json.dumps({"total": len(jobs)}).encode() + b"\n")
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()

    async def report(outcome: Outcome) -> None:
        counts[outcome.result] += 1
        if outcome.reason:
            reasons[f"{outcome.result}: {outcome.reason}"] += 1
        await response.write(outcome.line())

    await Warmer(setup, refresh).run(jobs, report)
    summary = {"summary": dict(counts), "reasons": dict(reasons)}
    log.info("warm_done", total=len(jobs), **counts)
    await response.write(json.dumps(summary).encode() + b"\n")
    await response.write_eof()
    return response


class Warmer:
    def __init__(self, setup: WarmSetup, refresh: bool) -> None:
        self.setup = setup
        self.refresh = refresh
        self.largest = 0  # bytes of the largest entry seen: the room the next one may need
        self.in_flight = 0  # warm requests under way, each of which may still store
        self.full = ""  # why the store takes no more, once it is at a bound
        self._next_start = 0.0
        self._pace = asyncio.Lock()

    async def run(self, jobs: list[tuple[str, str | None]], report: Any) -> None:
        queue = iter(jobs)
        timeout = aiohttp.ClientTimeout(total=self.setup.request_timeout)
        connector = aiohttp.TCPConnector(limit=self.setup.concurrency)
        skip = ("Accept-Encoding", "User-Agent")
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, skip_auto_headers=skip, auto_decompress=False
        ) as client:

            async def worker() -> None:
                for path, accept in queue:  # one shared iterator: each job taken once
                    await report(await self.one(client, path, accept))

            # A TaskGroup: when the admin client goes away, the other workers stop too.
            async with asyncio.TaskGroup() as group:
                for _ in range(self.setup.concurrency):
                    group.create_task(worker())

    async def one(self, client: aiohttp.ClientSession, path: str, accept: str | None) -> Outcome:
        self.in_flight += 1  # counted before the check: concurrent checks see each other
        try:
            if self.full or await self._at_bound():
                return Outcome(path, accept, "skipped", self.full)
            await self._paced()
            return await self._request(client, path, accept)
        finally:
            self.in_flight -= 1

    async def _request(
        self, client: aiohttp.ClientSession, path: str, accept: str | None
    ) -> Outcome:
        headers = {"User-Agent": "pixcache-warm"}
        if accept is not None:
            headers["Accept"] = accept
        if not self.refresh:
            headers["Cache-Control"] = "max-stale"
        # On the store's clock: the index's last-use times are, and _rank compares them.
        began = self.setup.store.clock.now()
        # As listed, byte for byte (path_problem admits no byte that needs quoting): image
        # services sign the path, and yarl would otherwise rewrite escapes and dot segments.
        url = URL(self.setup.target + path, encoded=True)
        try:
            async with client.get(url, headers=headers) as resp:
                size = 0
                async for chunk in resp.content.iter_any():
                    size += len(chunk)
                ours = own_cache_status(resp.headers.getall("Cache-Status", []))
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(path, accept, "failed", f"request failed: {type(exc).__name__}")
        outcome = judge(path, accept, status, ours)
        if outcome.result == "filled":
            self.largest = max(self.largest, size + HEAD_ALLOWANCE)
            await self._rank(path, began)
        return outcome

    async def _at_bound(self) -> bool:
        store = self.setup.store
        if not store.admits_new_entries():
            self.full = "free space is under --min-free"
        elif store.bounds.max_size is not None:
            total = await store.total_size()
            if not self.largest:  # nothing warmed yet: assume entries like those stored
                count = await store.entry_count()
                self.largest = total // count if count else 0
            # Room for this entry and the others under way, or no eviction is needed.
            if total + self.largest * self.in_flight >= store.bounds.max_size:
                self.full = "the store is at --max-size"
        return bool(self.full)

    async def _paced(self) -> None:
        """Start at most `rate` requests per second (spaced evenly)."""
        if not self.setup.rate:
            return
        async with self._pace:
            loop = asyncio.get_running_loop()
            wait = self._next_start - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_start = max(self._next_start, loop.time()) + 1 / self.setup.rate

    async def _rank(self, path: str, began: float) -> None:
        store = self.setup.store
        key = self.setup.key_target(path)
        for _ in range(RANK_POLLS):
            keys = await store.keys_at(key)
            if keys and await rank_least_recent(store, keys, began):
                return
            await asyncio.sleep(RANK_POLL_PAUSE)
        log.info("warm_rank_skipped", path=path, why="entry not indexed yet")


def own_cache_status(values: list[str]) -> dict[str, Any] | None:
    """Our member of Cache-Status (the last one, RFC 9211 §2), as its parameters."""
    try:
        members = http_sf.parse(", ".join(values).encode(), tltype="list")
    except Exception:  # noqa: BLE001 - whatever the parser raises, the field is unusable
        return None
    for name, params in reversed(members):
        if str(name) == "pixcache":
            return dict(params)
    return None


def judge(path: str, accept: str | None, status: int, cache: dict[str, Any] | None) -> Outcome:
    if cache is None:
        return Outcome(path, accept, "failed", f"status {status} without our Cache-Status")
    if cache.get("hit"):
        if cache.get("detail") == "stale-while-revalidate":
            return Outcome(path, accept, "refreshed")  # served stale, refreshed behind
        return Outcome(path, accept, "cached")
    if cache.get("stored"):
        return Outcome(path, accept, "refreshed" if str(cache.get("fwd")) == "stale" else "filled")
    fwd_status = cache.get("fwd-status")
    detail = cache.get("detail")
    if fwd_status is not None and fwd_status >= 400:
        reason = f"origin answered {fwd_status}"
    elif detail:
        reason = f"not stored: {detail}"
    elif status >= 400:
        reason = f"answered {status}"
    else:
        reason = "not stored"
    return Outcome(path, accept, "failed", reason)
