"""`pixcache serve` configured by the standard OTEL_* variables exports its spans over
OTLP/HTTP to a collector (a loopback receiver here), and every `request` log line carries
the trace id of its request's span and the request id the span records."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.fake_origin import FakeOrigin, Obj
from tests.system.procs import REPO, free_port, start_pixcache, stop

CACHEABLE = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"}


class Collector:
    """An OTLP/HTTP trace receiver on loopback: the spans it was sent, by service."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        app = web.Application()
        app.router.add_post("/v1/traces", self.receive)
        self.server = TestServer(app, host="127.0.0.1")

    async def receive(self, request: web.Request) -> web.Response:
        data = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        export = ExportTraceServiceRequest.FromString(data)
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append((attributes.get("service.name", ""), span))
        return web.Response(body=b"", content_type="application/x-protobuf")

    def named(self, name: str) -> list[Span]:
        return [span for _, span in self.spans if span.name == name]


def attribute(span: Span, key: str) -> str | int:
    for item in span.attributes:
        if item.key == key:
            value = item.value
            return value.int_value if value.HasField("int_value") else value.string_value
    raise KeyError(key)


async def test_spans_go_to_the_otlp_endpoint_and_log_lines_carry_their_trace_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector()
    await collector.server.start_server()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", str(collector.server.make_url("")))
    monkeypatch.setenv("OTEL_SERVICE_NAME", "pixcache-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # milliseconds between exports
    port, log = free_port(), tmp_path / "pixcache.log"
    async with FakeOrigin() as origin:
        origin.add("/t.jpg", Obj(body=b"traced body", headers=CACHEABLE))
        proc = start_pixcache(origin.url, tmp_path / "cache", port, log=log)
        try:
            async with aiohttp.ClientSession() as client:
                for _ in range(3):  # a miss, a hit, a hot hit
                    async with client.get(f"http://127.0.0.1:{port}/t.jpg") as resp:
                        assert await resp.read() == b"traced body"
                for _ in range(2000):  # the exporter sends every 50 ms
                    if len(collector.named("GET")) == 3 and collector.named("cache.commit"):
                        break
                    await asyncio.sleep(0.01)
        finally:
            stop(proc)
            await collector.server.close()
        traceparent = origin.requests[0][2]["traceparent"]

    assert {service for service, _ in collector.spans} == {"pixcache-under-test"}
    servers = sorted(collector.named("GET"), key=lambda span: span.start_time_unix_nano)
    assert len(servers) == 3
    assert traceparent.split("-")[1] == servers[0].trace_id.hex()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert [line["cache"] for line in requests] == ["uri-miss", "hit", "hit"]
    for line, span in zip(requests, servers, strict=True):
        assert line["trace_id"] == span.trace_id.hex()
        assert line["request_id"] == attribute(span, "pixcache.request_id")
        assert attribute(span, "http.response.status_code") == 200


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_an_unusable_tracing_variable_stops_the_start_and_is_named(
    tmp_path: Path, variables: dict[str, str], named: str
) -> None:
    env = {**os.environ, **variables}
    args = ["--origin", "http://127.0.0.1:9", "--cache-dir", str(tmp_path / "c")]
    args += ["--listen", f"127.0.0.1:{free_port()}"]
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"invalid setting {named}:" in done.stderr
