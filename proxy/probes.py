"""Liveness and readiness for an orchestrator (a kubelet, a load balancer), on the serving
port and without the admin token, and the drain that readiness announces.

The probe paths are routes of their own, matched before the route of every other request:
any method, any query string, answered here. So a probe never reaches the origin, never
becomes a cache key, and no stored entry can answer one. Readiness says 503 from the first
SIGTERM on, while `--shutdown-delay` keeps every other request served as usual, so that a
load balancer takes the instance out before it stops accepting connections. Each worker
process holds its own state: the master passes SIGTERM on to every worker."""

from __future__ import annotations

import structlog
from aiohttp import web

from storage import Store

log = structlog.get_logger("pixcache.probes")

# RFC 9111 §5.2.2.5: a probe's answer is about this moment; no cache in front may keep it.
_HEADERS = {"Cache-Control": "no-store"}
_METHODS = ("GET", "HEAD")


class Readiness:
    """Whether this process should be sent new requests."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.draining = False  # set on SIGTERM; never cleared: the process is stopping

    async def problems(self) -> list[str]:
        """Why not, or [] when ready. Anyone who reaches the serving port may read these
        words: the details (paths, the library's message) go to the log only."""
        found = ["shutting down"] if self.draining else []
        try:
            self.store.layout.check_writable()
        except OSError as exc:
            log.warning("not_ready", problem="cache directory not writable", error=str(exc))
            found.append("cache directory not writable")
        try:
            await self.store.entry_count()
        except Exception as exc:  # noqa: BLE001 - any index failure means not ready
            log.warning("not_ready", problem="index unavailable", error=str(exc))
            found.append("index unavailable")
        return found

    async def answer(self) -> web.Response:
        problems = await self.problems()
        return web.json_response(
            {"ready": not problems, "problems": problems},
            status=503 if problems else 200,
            headers=_HEADERS,
        )


def add_probe_routes(
    app: web.Application,
    readiness: Readiness,
    liveness_path: str | None,
    readiness_path: str | None,
) -> None:
    """Register the configured probe paths; call before the catch-all route. aiohttp tries
    the most specific path first, and a resource that refused the method would let the
    request fall through to the catch-all: hence "*" here, and a 405 of our own."""

    async def live(request: web.Request) -> web.StreamResponse:
        if request.method not in _METHODS:
            return _not_allowed()
        return web.json_response({"status": "ok"}, headers=_HEADERS)

    async def ready(request: web.Request) -> web.StreamResponse:
        if request.method not in _METHODS:
            return _not_allowed()
        return await readiness.answer()

    if liveness_path:
        app.router.add_route("*", liveness_path, live)
    if readiness_path:
        app.router.add_route("*", readiness_path, ready)


def _not_allowed() -> web.Response:
    # RFC 9110 §15.5.6: a 405 lists the methods the target does support.
    return web.json_response(
        {"error": "a probe path answers GET and HEAD only"},
        status=405,
        headers={**_HEADERS, "Allow": ", ".join(_METHODS)},
    )
