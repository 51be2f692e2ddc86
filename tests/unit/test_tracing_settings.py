"""Tracing is switched on by the standard OTEL_* variables only, and off by default; a
value pixcache cannot honour stops the start with an error naming the variable."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, build_config
from proxy.tracing import NO_TRACING, make_tracing
from proxy.tracing.settings import trace_settings

FLAGS = {"origin": "http://127.0.0.1:9", "cache_dir": "/tmp/pixcache-unused"}


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ()),  # off by default
        ({"OTEL_TRACES_EXPORTER": "none"}, ()),
        ({"OTEL_TRACES_EXPORTER": ""}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": " OTLP , console,otlp"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "console,none"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, ("otlp",)),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ("otlp",),
        ),
        (  # the traces variable wins over the general one
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            ("otlp",),
        ),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("console",)),
    ],
)
def test_exporters_from_the_environment(environ: dict[str, str], exporters: tuple[str]) -> None:
    settings = build_config(FLAGS, environ=environ).tracing
    assert settings.exporters == exporters
    assert settings.enabled is bool(exporters)


@pytest.mark.parametrize(
    ("environ", "named", "words"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER", "must be otlp, console"),
        ({"OTEL_TRACES_EXPORTER": "otlp,jaeger"}, "OTEL_TRACES_EXPORTER", "'otlp,jaeger'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/protobuf only",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "got 'http/json'",
        ),
    ],
)
def test_a_value_pixcache_cannot_honour_is_named(
    environ: dict[str, str], named: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        trace_settings(environ)
    message = str(caught.value)
    assert message.startswith(f"invalid setting {named}: ") and words in message


def test_off_is_the_hook_object_that_does_nothing() -> None:
    settings = build_config(FLAGS, environ={}).tracing
    assert make_tracing(settings) is NO_TRACING
    handle = object()
    assert NO_TRACING.serve(handle) is handle  # type: ignore[arg-type]
