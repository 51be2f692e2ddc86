"""A seeded adversarial fuzzer against a real `pixcache serve` in front of a hostile origin.

Over ten thousand malformed or adversarial requests and origin responses per run (see
client_cases.py, origin_cases.py and vocab.py), then what a user could observe: the process
still serves, every canonical object comes back byte for byte (miss and hit), nothing stored
differs from what the origin sent for its URL, no temp file outlives the run, memory stays
bounded, and no request reached a place it must not (the origin with a smuggled request or a
foreign Host, an address taken from a request).

The cases are a function of the seed: PIXCACHE_FUZZ_SEED=<seed> replays a run;
PIXCACHE_FUZZ_CASES and PIXCACHE_FUZZ_SECONDS change its length."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.commits import settled
from tests.hostile.canon import CANON
from tests.hostile.client_cases import ClientCase, Expect, request
from tests.hostile.oracle import Oracle
from tests.hostile.origin import HostileOrigin, Trap
from tests.hostile.parse import read_response
from tests.hostile.run import Tally, Target, fuzz, sweep
from tests.system.procs import free_port, start_pixcache, stop, wait_for_port

SEED = os.environ.get("PIXCACHE_FUZZ_SEED", "pixcache-hostile-1")
CASES = int(os.environ.get("PIXCACHE_FUZZ_CASES", "10000"))
# A bound against a hang, not a pace to keep: the cases run to the end however busy the
# machine is (the other test workers share it), so how many ran never depends on its load.
SECONDS = float(os.environ.get("PIXCACHE_FUZZ_SECONDS", "600"))
MIN_HOSTILE = 10_000
CONCURRENCY = 8
RSS_LIMIT_KIB = 400 * 1024
# Short deadlines keep a stalled origin case from holding a connection for long.
DEADLINES = ("--connect-timeout", "1", "--header-timeout", "2", "--read-timeout", "1")
DEADLINES += ("--total-timeout", "3")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def crossed_unasked(violation: str, crossed: set[int]) -> bool:
    """Whether a violation is an unasked response that crossed the next request on the wire
    (tests/hostile/origin.py): read as that request's answer, as by any HTTP/1.1 client."""
    found = re.search(r"POISON-(\d+)|/o/poison-(\d+)", violation)
    return found is not None and int(found.group(1) or found.group(2)) in crossed


def shifted(violation: str, origin: HostileOrigin) -> bool:
    """Whether a violation is a response read one request late on a connection where an
    unasked response had crossed a request (HostileOrigin.shifted_by_crossing)."""
    found = re.search(r"a response for (\S+) answered a request for (\S+)", violation)
    return found is not None and origin.shifted_by_crossing(found.group(1), found.group(2))


def log_tracebacks(log: Path) -> Counter[str]:
    """Log events that carry a traceback, by name: handler_failed (a request's exception),
    fill_crashed (a fill's), or any other exception nobody mapped at its boundary."""
    tracebacks = Counter[str]()
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if "exception" in event:
            last = str(event["exception"]).strip().splitlines()[-1][:160]
            where = event.get("path") or event.get("key") or ""
            tracebacks[f"{event.get('event')} {where}: {last}"] += 1
    return tracebacks


async def canonical_twice(port: int, oracle: Oracle, tally: Tally, cache_dir: Path) -> list[str]:
    """Every canonical object through pixcache, twice: equal bytes both times, the second a
    hit. Returns what went wrong."""
    problems = []
    check_case = ClientCase(-2, "canonical", (), [], 0)
    for attempt in ("first", "second"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        try:
            writer.write(b"".join(request("GET", path) for path in CANON))
            for path, canon in CANON.items():
                response = await asyncio.wait_for(read_response(reader, "GET"), 10)
                if response is None or response.status != 200 or response.body != canon.body:
                    got = None if response is None else (response.status, len(response.body))
                    problems.append(f"{attempt} GET {path}: {got}, not 200 with its bytes")
                    continue
                for text in oracle.check(check_case, Expect("GET", path), response):
                    tally.violation(check_case, text)
                cache = response.get("cache-status") or ""
                if attempt == "second" and not cache.startswith("pixcache; hit"):
                    problems.append(f"second GET {path} was not a hit: {cache}")
        finally:
            writer.close()
        problems += [f"temp file never went away: {p}" for p in await temp_files_left(cache_dir)]
    return problems


async def temp_files_left(cache_dir: Path) -> list[Path]:
    """The temp files still there once fills have had 20 s to finish (polled, not slept)."""
    try:
        await settled(cache_dir, seconds=20)
    except AssertionError:
        return sorted((cache_dir / "tmp").iterdir())
    return []


@pytest.mark.long
async def test_hostile_clients_and_origin_cannot_break_pixcache(tmp_path: Path) -> None:
    secret = "s" + hashlib.sha256(SEED.encode()).hexdigest()[:20]
    trap = Trap()
    trap_port = await trap.start()
    origin = HostileOrigin(SEED, trap_port)
    origin_url = await origin.start()
    cache_dir, log = tmp_path / "cache", tmp_path / "pixcache.log"
    target = Target(free_port(), free_port())
    admin = ("--admin-listen", f"127.0.0.1:{target.admin_port}", "--admin-token", f"{secret}-admin")
    # start_pixcache blocks while it waits for the port; the origin is not needed until then.
    proc = start_pixcache(origin_url, cache_dir, target.port, *DEADLINES, *admin, log=log)
    oracle = Oracle(SEED, secret, trap_port, f"127.0.0.1:{origin.port}")
    replay = f"replay with PIXCACHE_FUZZ_SEED={SEED!r}"
    try:
        wait_for_port(target.admin_port, proc)
        warmup = Tally()
        assert not await canonical_twice(target.port, oracle, warmup, cache_dir)
        rss_before = rss_kib(proc.pid)

        began = time.monotonic()
        tally, ran = await fuzz(
            SEED,
            secret,
            trap_port,
            target,
            oracle,
            cases=CASES,
            seconds=SECONDS,
            concurrency=CONCURRENCY,
        )
        fuzz_seconds = time.monotonic() - began
        alive = proc.poll() is None
        canonical = await canonical_twice(target.port, oracle, tally, cache_dir) if alive else []
        stored = await sweep(tally.touched[:6000], target, oracle, tally) if alive else 0
        leftover = await temp_files_left(cache_dir)
        rss_after = rss_kib(proc.pid) if alive else 0
    finally:
        stop(proc)
        await origin.stop()
        await trap.stop()
    crossed = [
        v
        for v in tally.violations
        if crossed_unasked(v, origin.unasked_crossed) or shifted(v, origin)
    ]
    tally.violations = [v for v in tally.violations if v not in crossed]
    tracebacks = log_tracebacks(log)
    handler_failed = sum(n for name, n in tracebacks.items() if name.startswith("handler_failed "))
    client_hostile = sum(tally.hostile.values())
    hostile = client_hostile + origin.hostile_served
    print(
        f"\nhostile summary: seed={SEED!r} client cases={ran} in {fuzz_seconds:.1f}s; "
        f"hostile requests={client_hostile} {dict(tally.hostile)}; "
        f"origin responses={sum(origin.served.values())} (hostile {origin.hostile_served}; "
        f"unasked responses withheld {origin.unasked_withheld}, crossed by a request "
        f"{len(origin.unasked_crossed)}, read as its answer or shifting the answers after "
        f"it {len(crossed)}) "
        f"{dict(origin.served)}; total hostile={hostile}; responses read={tally.responses}; "
        f"stored entries re-read={stored}; crashes={0 if alive else 1}; "
        f"wrong bytes={sum('wrong bytes' in v for v in tally.violations)}; "
        f"violations={len(tally.violations)}; origin findings={len(origin.findings)}; "
        f"trap connections={trap.connections}; unkeyed fields at origin={origin.unkeyed_seen}; "
        f"handler_failed={handler_failed}; "
        f"tracebacks={dict(tracebacks)}; "
        f"observations={dict(tally.observations)}; "
        f"RSS before={rss_before // 1024} MiB after={rss_after // 1024} MiB"
    )
    for shape, count in tally.kinds_violating.most_common():
        print(f"  {count:5d} × {shape}")
    for text in tally.violations[: int(os.environ.get("PIXCACHE_FUZZ_SHOW", "0"))]:
        print(f"  {text[:300]}")
    for text in [v for v in tally.violations if "wrong bytes" in v][:10]:
        # (connection, its nth request, method) at the origin, for every path it names
        print(f"  {text[:120]}: {origin.where_asked(text)}")
    for text in Counter(f[:150] for f in origin.findings).most_common(15):
        print(f"  origin: {text[1]:5d} × {text[0]}")

    assert hostile >= MIN_HOSTILE, f"only {hostile} hostile cases ran in {SECONDS:g}s ({replay})"
    assert alive, f"pixcache exited with {proc.returncode} during the run ({replay})"
    assert not canonical, f"canonical objects after the run ({replay}): {canonical}"
    assert not tally.violations, f"{replay}:\n" + "\n".join(tally.violations[:40])
    assert not origin.findings, f"{replay}:\n" + "\n".join(origin.findings[:40])
    assert trap.connections == 0, f"pixcache connected to an address from a request ({replay})"
    assert not leftover, f"temp files left in the cache once idle: {leftover[:10]}"
    assert rss_after < RSS_LIMIT_KIB, f"RSS {rss_before} KiB before, {rss_after} KiB after"
    assert not tracebacks, f"tracebacks in pixcache's log: {dict(tracebacks)} ({replay})"
