"""A stand-in for an image service (imgproxy, imagor, thumbor) on loopback: every GET path
is a derivative it renders, with a body derived from the path as sent, so tests can count
renders per request target and see how many were in flight at once.

Bodies are fresh for an hour and carry an ETag, so a revalidation gets a 304. A path listed
in `missing` answers 404. Binds to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
from types import TracebackType
from typing import Self

from aiohttp import web

GATE_WAIT = 10.0


def body_for(raw_path: str) -> bytes:
    """The bytes the service renders for a request target (a few KiB, differs per target)."""
    seed = hashlib.sha256(raw_path.encode()).digest()
    return seed * 128


class ImageService:
    def __init__(self, *, gate: int = 0) -> None:
        # Hold each response until `gate` requests are in flight (at most GATE_WAIT
        # seconds), so that a bound on concurrency is met, not merely not exceeded.
        self.gate = gate
        self._arrived = asyncio.Condition()
        self.arrivals = 0
        self.held: set[str] = set()  # targets answered only once `release` is set
        self.release = asyncio.Event()
        self.accepts: list[str | None] = []  # the Accept field of each request
        self.hits: collections.Counter[str] = collections.Counter()
        self.missing: set[str] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        target = request.raw_path  # exactly as sent, query included
        self.hits[target] += 1
        self.accepts.append(request.headers.get("Accept"))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate:
                # Requests pass in groups of `gate`: each waits for the rest of its group.
                ticket, self.arrivals = self.arrivals, self.arrivals + 1
                group_end = (ticket // self.gate + 1) * self.gate
                async with self._arrived:
                    self._arrived.notify_all()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._arrived.wait_for(lambda: self.arrivals >= group_end),
                            GATE_WAIT,
                        )
            if target in self.held:
                await asyncio.wait_for(self.release.wait(), GATE_WAIT)
            if target in self.missing:
                return web.Response(status=404, text="no such image\n")
            body = body_for(target)
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            headers = {"Cache-Control": "max-age=3600", "ETag": etag}
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers=headers)
            return web.Response(body=body, headers=headers, content_type="application/octet-stream")
        finally:
            self.in_flight -= 1
