"""Whether traces are exported, and how: the OpenTelemetry SDK's standard variables.

Tracing is off unless OTEL_TRACES_EXPORTER names an exporter. (The specification's default
is "otlp"; pixcache's is off, so that a deployment which sets OTEL_EXPORTER_OTLP_ENDPOINT
for other programs does not start exporting from the cache unasked.) The SDK reads the
rest itself in each worker: OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_PROPAGATORS,
OTEL_BSP_*. What is validated here is what would otherwise fail late or silently: an
unknown exporter, a protocol we do not ship, an extra that is not installed."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.settings import ConfigError

EXPORTERS = ("otlp", "console", "none")
OTLP_PROTOCOL = "http/protobuf"  # the specification's default; grpc needs another package
INSTALL_HINT = "install the otel extra: pip install 'pixcache[otel]'"


@dataclass(frozen=True)
class TraceSettings:
    exporters: tuple[str, ...] = ()  # "otlp", "console"; empty: tracing is off

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)


def trace_settings(environ: Mapping[str, str]) -> TraceSettings:
    """The tracing settings in `environ`. Raises ConfigError naming the variable."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TraceSettings()
    raw = environ.get("OTEL_TRACES_EXPORTER", "")
    names = tuple(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))
    for name in names:
        if name not in EXPORTERS:
            raise ConfigError(
                "OTEL_TRACES_EXPORTER", f"must be {', '.join(EXPORTERS)} (or a list), got {raw!r}"
            )
    exporters = tuple(n for n in names if n != "none")
    if not exporters:
        return TraceSettings()
    if not _installed("opentelemetry.sdk"):
        raise ConfigError("OTEL_TRACES_EXPORTER", f"{raw!r} needs OpenTelemetry: {INSTALL_HINT}")
    if "otlp" in exporters:
        variable = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        protocol = environ.get(variable) or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol is None:
            variable, protocol = "", OTLP_PROTOCOL
        elif variable not in environ:
            variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
        if protocol.strip().lower() != OTLP_PROTOCOL:
            raise ConfigError(
                variable,
                f"pixcache exports OTLP over {OTLP_PROTOCOL} only (port 4318), got {protocol!r}",
            )
        if not _installed("opentelemetry.exporter.otlp.proto.http"):
            raise ConfigError("OTEL_TRACES_EXPORTER", f"otlp needs its exporter: {INSTALL_HINT}")
    return TraceSettings(exporters)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
