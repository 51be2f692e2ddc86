"""OpenTelemetry spans of real requests through pixcache to a real loopback origin,
collected in-process by the SDK's in-memory exporter: the span tree of a miss, a hit and a
coalesced fill, the stage an origin timeout hit, and the `traceparent` the origin got."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from proxy.app import FILLS_KEY, build_app, make_store
from proxy.config import build_config
from proxy.tracing.otel import OtelTracing
from tests.fake_origin import FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import Proxy, cache_status

CACHEABLE = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"}
LONG = {"connect_timeout": "10", "read_timeout": "10", "total_timeout": "20"}
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Traced:
    """A proxy whose spans go to an in-memory exporter."""

    def __init__(self, proxy: Proxy, exporter: InMemorySpanExporter) -> None:
        self.proxy = proxy
        self.exporter = exporter

    async def spans_when(self, done: Callable[[list[ReadableSpan]], bool]) -> list[ReadableSpan]:
        """The finished spans once `done` holds for them (spans end after the response
        was written: the handler returns, the fill commits)."""
        for _ in range(3000):
            spans = list(self.exporter.get_finished_spans())
            if done(spans):
                return spans
            await asyncio.sleep(0.01)
        raise AssertionError(f"spans never matched: {[s.name for s in spans]}")

    async def servers(self, count: int) -> list[ReadableSpan]:
        """The spans, once `count` server spans and every fill span ended."""

        def done(spans: list[ReadableSpan]) -> bool:
            return len(named(spans, "GET")) >= count and not self.fills_running()

        return await self.spans_when(done)

    def fills_running(self) -> bool:
        assert self.proxy.app is not None
        return self.proxy.app[FILLS_KEY].running > 0


MakeTraced = Callable[..., Awaitable[Traced]]


@pytest.fixture
async def make_traced(tmp_path: Path) -> AsyncIterator[MakeTraced]:
    servers: list[TestServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(origin_url: str, **settings: Any) -> Traced:
        cache_dir = tmp_path / f"cache{len(servers)}"
        config = build_config(
            {"origin": origin_url, "cache_dir": str(cache_dir), **settings}, environ={}
        )
        store = make_store(config)
        store.prepare()
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        app = build_app(config, store, tracing=OtelTracing(provider))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        client = aiohttp.ClientSession(auto_decompress=False)
        sessions.append(client)
        url = str(server.make_url("")).rstrip("/")
        return Traced(Proxy(url, store, config.cache_dir, client, app), exporter)

    yield make
    for client in sessions:
        await client.close()
    for server in servers:
        await server.close()


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = named(spans, name)
    assert len(found) == 1, f"{len(found)} spans named {name}: {[s.name for s in spans]}"
    return found[0]


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[str]:
    parent_id = parent.context.span_id
    kids = [s for s in spans if s.parent is not None and s.parent.span_id == parent_id]
    return [s.name for s in sorted(kids, key=lambda s: s.start_time or 0)]


def trace_hex(span: ReadableSpan) -> str:
    return f"{span.context.trace_id:032x}"


def traceparent_of(origin: FakeOrigin, path: str) -> str:
    [headers] = [h for _, target, h in origin.requests if target == path]
    return headers["traceparent"]


async def test_a_miss_is_one_trace_of_lookup_fill_and_origin_stages(
    origin: FakeOrigin, make_traced: MakeTraced
) -> None:
    body = pattern_bytes(200_000, seed=1)
    origin.add("/a.jpg", Obj(body=body, headers=CACHEABLE))
    traced = await make_traced(origin.url)
    resp, got = await traced.proxy.get("/a.jpg")
    assert resp.status == 200 and got == body
    spans = await traced.servers(1)

    root = one(spans, "GET")
    assert root.parent is None and root.kind is SpanKind.SERVER
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["pixcache.cache"] == "uri-miss"
    assert children(spans, root) == ["cache.lookup", "cache.fill"]
    assert one(spans, "cache.lookup").attributes["pixcache.found"] is False
    fill = one(spans, "cache.fill")
    assert children(spans, fill) == [
        "cache.fill_slot",
        "cache.lock_wait",
        "origin.fetch",
        "image.guard",
        "cache.commit",
    ]
    assert fill.attributes["pixcache.fill.state"] == "complete"
    fetch = one(spans, "origin.fetch")
    assert fetch.kind is SpanKind.CLIENT
    assert fetch.attributes["http.response.status_code"] == 200
    assert fetch.attributes["http.response.body.size"] == len(body)
    assert children(spans, fetch) == ["origin.connect", "origin.headers", "origin.body"]
    stages = [one(spans, f"origin.{name}") for name in ("connect", "headers", "body")]
    for earlier, later in zip(stages, stages[1:], strict=False):
        assert earlier.end_time is not None and later.start_time is not None
        assert earlier.end_time <= later.start_time  # in the order they happened
    assert all(s.context.trace_id == root.context.trace_id for s in spans)
    # W3C Trace Context: the origin's request continues this trace, from the fetch span.
    version, trace_id, parent_id, flags = traceparent_of(origin, "/a.jpg").split("-")
    assert (version, trace_id) == ("00", trace_hex(root))
    assert parent_id == f"{fetch.context.span_id:016x}"
    assert int(flags, 16) & 1  # sampled


async def test_a_hit_is_a_lookup_and_a_hot_hit_the_server_span_alone(
    origin: FakeOrigin, make_traced: MakeTraced
) -> None:
    origin.add("/h.jpg", Obj(body=b"hit me", headers=CACHEABLE))
    traced = await make_traced(origin.url)
    await traced.proxy.get("/h.jpg")
    await traced.servers(1)
    traced.exporter.clear()
    for _ in range(2):  # the first hit takes the full path, the next is a hot one
        resp, got = await traced.proxy.get("/h.jpg")
        assert got == b"hit me" and cache_status(resp).startswith("pixcache; hit")
    spans = await traced.servers(2)
    first, hot = sorted(named(spans, "GET"), key=lambda s: s.start_time or 0)
    assert children(spans, first) == ["cache.lookup"]
    assert one(spans, "cache.lookup").attributes["pixcache.found"] is True
    assert children(spans, hot) == []
    for span in (first, hot):
        assert span.attributes["pixcache.cache"] == "hit"
        assert span.attributes["http.response.status_code"] == 200
    assert first.context.trace_id != hot.context.trace_id  # a trace per request
    assert origin.hits["/h.jpg"] == 1


class GatedOrigin:
    """A loopback origin that holds every response until `gate` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()
        self.traceparents: list[str] = []
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.answer)
        self.server = TestServer(app, host="127.0.0.1")

    async def answer(self, request: web.Request) -> web.Response:
        self.traceparents.append(request.headers.get("traceparent", ""))
        self.arrived.set()
        await self.gate.wait()
        return web.Response(body=b"gated body", headers=CACHEABLE)


async def test_a_coalesced_fill_is_one_origin_span_in_the_leaders_trace_linked_from_joiners(
    make_traced: MakeTraced,
) -> None:
    origin = GatedOrigin()
    await origin.server.start_server()
    try:
        traced = await make_traced(str(origin.server.make_url("")).rstrip("/"))
        fills = traced.proxy.app[FILLS_KEY]  # type: ignore[index]
        tasks = [asyncio.create_task(traced.proxy.get("/c.jpg"))]
        await asyncio.wait_for(origin.arrived.wait(), 20)
        tasks += [asyncio.create_task(traced.proxy.get("/c.jpg")) for _ in range(4)]
        # Every later request joined the fill: a reader beyond its leader.
        for _ in range(2000):
            if sum(f.body.tail.readers for f in fills.in_flight.values()) == 5:
                break
            await asyncio.sleep(0.01)
        origin.gate.set()
        results = [await task for task in tasks]
        assert all(got == b"gated body" for _, got in results)
        spans = await traced.servers(5)
    finally:
        await origin.server.close()

    assert len(origin.traceparents) == 1
    fetch, fill = one(spans, "origin.fetch"), one(spans, "cache.fill")
    servers = named(spans, "GET")
    [leader] = [s for s in servers if fill.parent and s.context.span_id == fill.parent.span_id]
    joiners = [s for s in servers if s is not leader]
    assert len(joiners) == 4
    assert origin.traceparents[0].split("-")[1] == trace_hex(leader)  # the leader's trace
    assert fetch.context.trace_id == leader.context.trace_id
    for joiner in joiners:
        assert joiner.context.trace_id != leader.context.trace_id
        assert children(spans, joiner) == ["cache.lookup"]  # no fill of its own
        assert [link.context.span_id for link in joiner.links] == [fill.context.span_id]
        [event] = [e for e in joiner.events if e.name == "fill.joined"]
        assert event.attributes is not None
        assert event.attributes["pixcache.fill.trace_id"] == trace_hex(leader)
        assert joiner.attributes["pixcache.collapsed"] is True
    joined = [e.attributes["pixcache.reader.trace_id"] for e in fill.events]  # type: ignore[index]
    assert sorted(joined) == sorted(trace_hex(j) for j in joiners)


async def test_an_origin_header_timeout_fails_the_headers_stage(
    origin: FakeOrigin, make_traced: MakeTraced
) -> None:
    origin.add("/late.jpg", Obj(body=b"late", headers=CACHEABLE, header_delay=5))
    traced = await make_traced(origin.url, **LONG, header_timeout="0.3")
    resp, _ = await traced.proxy.get("/late.jpg")
    assert resp.status == 504
    spans = await traced.servers(1)
    root, fetch = one(spans, "GET"), one(spans, "origin.fetch")
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["error.type"] == "origin_timeout"
    assert root.attributes["pixcache.origin.stage"] == "headers"
    assert one(spans, "cache.fill").status.status_code is StatusCode.ERROR
    assert fetch.status.status_code is StatusCode.ERROR
    assert fetch.attributes["pixcache.origin.stage"] == "headers"
    assert children(spans, fetch) == ["origin.connect", "origin.headers"]
    assert one(spans, "origin.connect").status.status_code is StatusCode.UNSET
    headers = one(spans, "origin.headers")
    assert headers.status.status_code is StatusCode.ERROR
    assert headers.status.description == "origin headers timeout after 0.3s"


async def test_an_origin_that_stalls_in_the_body_fails_the_body_stage(
    origin: FakeOrigin, make_traced: MakeTraced
) -> None:
    body = pattern_bytes(100_000, seed=4)
    origin.add("/stall.jpg", Obj(body=body, headers=CACHEABLE, mode="pause", pause_seconds=10))
    traced = await make_traced(origin.url, **{**LONG, "read_timeout": "0.3"})
    with pytest.raises(aiohttp.ClientPayloadError):
        await traced.proxy.get("/stall.jpg")  # the headers were out: the body is cut
    spans = await traced.servers(1)
    fetch = one(spans, "origin.fetch")
    assert children(spans, fetch) == ["origin.connect", "origin.headers", "origin.body"]
    assert one(spans, "origin.headers").status.status_code is StatusCode.UNSET
    assert one(spans, "origin.body").status.status_code is StatusCode.ERROR
    assert fetch.attributes["pixcache.origin.stage"] == "read"
    assert one(spans, "cache.fill").attributes["pixcache.fill.state"] == "failed"
    assert traced.proxy.entry_files() == []


async def test_an_https_origin_shows_its_tls_handshake(
    make_traced: MakeTraced, tmp_path: Path
) -> None:
    async with FakeOrigin(tls=True) as origin:
        ca_file = tmp_path / "ca.pem"
        origin.ca.cert_pem.write_to_path(str(ca_file))
        origin.add("/s.jpg", Obj(body=b"tls body", headers=CACHEABLE))
        traced = await make_traced(origin.url, origin_ca_file=str(ca_file))
        resp, got = await traced.proxy.get("/s.jpg")
        assert got == b"tls body"
        spans = await traced.servers(1)
    fetch = one(spans, "origin.fetch")
    stages = ["origin.connect", "origin.tls", "origin.headers", "origin.body"]
    assert children(spans, fetch) == stages


async def test_a_clients_traceparent_is_the_parent_and_reaches_the_origin_as_ours(
    origin: FakeOrigin, make_traced: MakeTraced
) -> None:
    origin.add("/p.jpg", Obj(body=b"parented", headers=CACHEABLE))
    traced = await make_traced(origin.url)
    sent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    await traced.proxy.get("/p.jpg", headers={"traceparent": sent, "tracestate": "vendor=abc"})
    spans = await traced.servers(1)
    root, fetch = one(spans, "GET"), one(spans, "origin.fetch")
    assert trace_hex(root) == CLIENT_TRACE
    assert root.parent is not None and f"{root.parent.span_id:016x}" == CLIENT_SPAN
    assert traceparent_of(origin, "/p.jpg") == f"00-{CLIENT_TRACE}-{fetch.context.span_id:016x}-01"

    [(_, _, headers)] = origin.requests
    assert headers["tracestate"] == "vendor=abc"


@pytest.mark.parametrize(
    "bad",
    [
        "00-" + "0" * 32 + "-" + CLIENT_SPAN + "-01",  # all-zero trace id: invalid
        "00-" + CLIENT_TRACE + "-" + CLIENT_SPAN,  # no flags
        "not a traceparent\tx-injected: 1",
    ],
)
async def test_an_invalid_traceparent_starts_a_new_trace_and_is_never_forwarded(
    origin: FakeOrigin, make_traced: MakeTraced, bad: str
) -> None:
    origin.add("/bad.jpg", Obj(body=b"fresh trace", headers=CACHEABLE))
    traced = await make_traced(origin.url)
    await traced.proxy.get("/bad.jpg", headers={"traceparent": bad})
    spans = await traced.servers(1)
    root, fetch = one(spans, "GET"), one(spans, "origin.fetch")
    assert root.parent is None
    ours = f"00-{trace_hex(root)}-{fetch.context.span_id:016x}-"
    assert traceparent_of(origin, "/bad.jpg").startswith(ours)


async def test_without_tracing_the_origin_request_is_what_it_was(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """Off by default: pixcache adds no trace context (and, as before, forwards a
    client's own end to end)."""
    origin.add("/off.jpg", Obj(body=b"untraced", headers=CACHEABLE))
    await proxy.get("/off.jpg")
    sent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    await proxy.get("/off2.jpg", headers={"traceparent": sent})
    [(_, _, first), (_, _, second)] = origin.requests
    assert "traceparent" not in first and "tracestate" not in first
    assert second["traceparent"] == sent
