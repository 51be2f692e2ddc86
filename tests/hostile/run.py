"""Driving the fuzzer: client cases over raw loopback sockets, a bounded number at a time,
each response judged by the oracle as it arrives."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.hostile.client_cases import ClientCase, Expect, client_case, request
from tests.hostile.oracle import Oracle
from tests.hostile.parse import Malformed, read_response

# Longer than pixcache's own total deadline in the run, so a missing answer is pixcache's.
RESPONSE_DEADLINE = 6.0
MAX_VIOLATIONS = 2_000


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)  # client cases run, by kind
    hostile: Counter[str] = field(default_factory=Counter)  # hostile requests, by kind
    responses: int = 0
    stalls: int = 0
    violations: list[str] = field(default_factory=list)
    kinds_violating: Counter[str] = field(default_factory=Counter)
    touched: list[str] = field(default_factory=list)  # /o/ and /u/ URLs asked for
    observations: Counter[str] = field(default_factory=Counter)  # reported, not failures

    def violation(self, case: ClientCase, text: str) -> None:
        self.kinds_violating[f"{case.kind}: {_shape(text)}"] += 1
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(f"case {case.number} ({case.kind}): {text}")


def _shape(text: str) -> str:
    """A violation's text without its numbers and paths, to group them."""
    return " ".join("#" if any(c.isdigit() for c in word) else word for word in text.split())


@dataclass
class Target:
    port: int
    admin_port: int


async def run_case(case: ClientCase, target: Target, oracle: Oracle, tally: Tally) -> None:
    tally.cases[case.kind] += 1
    tally.hostile[case.kind] += case.hostile
    tally.touched += [f"/o/{n}" for n in case.origin_numbers]
    if case.kind == "unkeyed":
        tally.touched.append(f"/u/{case.number}")
    port = target.admin_port if case.admin else target.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        try:
            for item in case.script:
                if isinstance(item, float):
                    await asyncio.sleep(item)  # the client's own pacing
                else:
                    writer.write(item)
                    await writer.drain()
        except ConnectionError:
            pass  # pixcache closed early (e.g. after a 400): read what it sent before
        if case.hangup:
            return
        await _read_all(case, case.expects, reader, oracle, tally)
    finally:
        writer.transport.abort() if case.hangup else writer.close()


async def _read_all(
    case: ClientCase,
    expects: list[Expect],
    reader: asyncio.StreamReader,
    oracle: Oracle,
    tally: Tally,
) -> None:
    for expect in expects:
        try:
            async with asyncio.timeout(RESPONSE_DEADLINE):
                response = await read_response(reader, expect.method)
        except TimeoutError:
            if not expect.forbidden:
                tally.stalls += 1
                tally.violation(case, f"no response within {RESPONSE_DEADLINE:g} s")
            return
        except Malformed as exc:
            tally.violation(case, f"malformed response: {exc}")
            return
        except ConnectionError:
            return  # reset by pixcache: an aborted response or a refused request
        if response is None:
            return
        tally.responses += 1
        if expect.forbidden:
            tally.violation(case, "answered a request sent after the connection had to close")
        for text in oracle.check(case, expect, response):
            tally.violation(case, text)
        if not response.complete:
            return
        closing = response.start.startswith(b"HTTP/1.0") or response.get("connection") == "close"
        if expect.method == "HEAD" and response.status >= 400 and closing:
            # An error to a request pixcache could not parse ignores that it was a HEAD
            # (RFC 9110 §9.3.2); harmless only because the connection closes right after.
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(RESPONSE_DEADLINE):
                    if await reader.read(1 << 16):
                        tally.observations["content after an error response to HEAD"] += 1
            return


async def fuzz(
    seed: str,
    secret: str,
    trap_port: int,
    target: Target,
    oracle: Oracle,
    *,
    cases: int,
    seconds: float,
    concurrency: int,
) -> tuple[Tally, int]:
    """Run client cases 0..cases-1 (fewer if `seconds` run out); returns the tally and how
    many cases ran."""
    tally = Tally()
    numbers = iter(range(cases))
    deadline = time.monotonic() + seconds
    ran = 0

    async def worker() -> None:
        nonlocal ran
        for number in numbers:
            if time.monotonic() > deadline:
                return
            case = client_case(seed, number, secret, trap_port)
            try:
                await run_case(case, target, oracle, tally)
            except OSError as exc:
                tally.violation(case, f"cannot connect: {exc}")
            ran += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally, ran


async def sweep(paths: list[str], target: Target, oracle: Oracle, tally: Tally) -> int:
    """Ask for each path with only-if-cached (RFC 9111 §5.2.1.7: never the origin): whatever
    was stored during the run must be what the origin sent for that URL. Returns how many
    stored responses were checked."""
    stored = 0
    batch = 50
    for start in range(0, len(paths), batch):
        group = paths[start : start + batch]
        sweep_case = ClientCase(-1, "sweep", (), [], 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", target.port, limit=1 << 20)
        try:
            fields = [b"Cache-Control: only-if-cached"]
            writer.write(b"".join(request("GET", path, fields) for path in group))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            for path in group:
                try:
                    async with asyncio.timeout(RESPONSE_DEADLINE):
                        response = await read_response(reader, "GET")
                except (TimeoutError, Malformed, ConnectionError) as exc:
                    tally.violation(sweep_case, f"sweep of {path}: {exc!r}")
                    break
                if response is None:
                    tally.violation(sweep_case, f"sweep of {path}: connection closed")
                    break
                stored += response.status == 200
                for text in oracle.check(sweep_case, Expect("GET", path, valid=False), response):
                    tally.violation(sweep_case, f"stored: {text}")
        finally:
            writer.close()
    return stored
