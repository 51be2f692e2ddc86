"""Configuration: built once at start from flags > PIXCACHE_* environment > TOML file >
defaults, validated, frozen. Nothing else in pixcache reads the environment. What each
setting accepts, and how the sources are merged, is in proxy/settings.py."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from proxy.policy.cache_key import refused_drop
from proxy.policy.freshness import TtlPolicy
from proxy.settings import (
    REQUIRED,
    SETTINGS,
    ConfigError,
    Origin,
    merge_sources,
    read_toml,
)
from proxy.tracing.settings import TraceSettings, trace_settings

__all__ = [
    "SETTINGS",
    "Config",
    "ConfigError",
    "Deadlines",
    "Origin",
    "build_config",
    "merge_sources",
]


@dataclass(frozen=True)
class Deadlines:
    """Seconds allowed for each stage of an origin fetch (see docs/configuration.md)."""

    connect: float = 5.0
    tls: float = 5.0
    headers: float = 30.0
    read: float = 30.0
    total: float = 300.0


DEFAULT_UNKEYED_REQUEST_FIELDS = (
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-prefix",
    "x-host",
    "x-original-url",
    "x-original-host",
    "x-rewrite-url",
    "forwarded",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
)


@dataclass(frozen=True)
class Config:
    origin: Origin
    cache_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    deadlines: Deadlines = Deadlines()
    origin_ca_file: Path | None = None
    s3_endpoint_url: str | None = None  # None: AWS, by the region
    s3_region: str | None = None  # None: from the AWS chain (AWS_REGION, profile)
    s3_addressing_style: str = "auto"  # auto, path or virtual
    s3_default_cache_control: str = "public, max-age=3600"  # for objects without one
    s3_not_found_cache_control: str = ""  # for a missing key; "": not stored
    workers: int = 1
    max_size: int | None = None  # bytes the cache may hold; None: no limit
    min_free: int = 0  # bytes that must stay free on the cache's filesystem
    max_object_size: int | None = None  # larger objects are proxied, not stored
    stale_grace: float = 86400.0  # seconds an entry is kept past its expiry
    scrub_rate: int = 4 << 20  # bytes per second the scrubber re-verifies; 0: off
    # Bodies up to this size are read whole and checksummed on every hit, and sent from the
    # bytes checked; larger ones go by sendfile, size checked only. 0: sizes only.
    verify_on_hit_max_size: int = 1 << 20
    hot_cache_size: int = 16 << 20  # checked bodies a worker keeps for its next hits
    grace: float = 0.0  # seconds of staleness servable while the origin fails
    # Operator bounds on freshness lifetimes (proxy/policy/freshness.py TtlPolicy).
    max_ttl: float | None = None  # longest lifetime of any response; None: the origin's
    max_error_ttl: float = 60.0  # longest lifetime of an error (status >= 400)
    default_ttl: float = 0.0  # lifetime where neither origin nor heuristic gives one; 0: off
    cache_control_field: str = "Pixcache-Cache-Control"  # RFC 9213 field for this cache
    verify_images: str = "header"  # off, header (probe) or decode (and decode before storing)
    max_image_width: int = 16384
    max_image_height: int = 16384
    max_image_pixels: int = 50_000_000
    max_image_frames: int = 100
    refuse_invalid_images: bool = False
    image_probe_bytes: int = 1 << 20  # most bytes held back until a body is judged
    image_probe_seconds: float = 5.0  # longest a body is held back until it is judged
    max_fills: int = 64  # origin fills in flight at once
    fill_queue: int = 256  # fills waiting for a slot; past that, 503
    max_rss: int | None = None  # above this resident size, new fills get 503
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    admin_token: str | None = None  # bearer token for the admin listener
    tag_header: str = "Surrogate-Key"  # response field whose words tag an entry for purges
    shutdown_grace: float = 30.0  # seconds requests in flight get to finish on SIGTERM
    # Seconds between SIGTERM and the graceful stop, serving as usual while readiness says
    # 503 and load balancers take the instance out (proxy/probes.py).
    shutdown_delay: float = 0.0
    liveness_path: str | None = None  # answered by pixcache on the serving port; None: off
    readiness_path: str | None = None  # likewise; 503 from SIGTERM on
    # URI prefix of nginx's internal location for the cache's bodies/; None: hits are sent
    # by pixcache itself, never by X-Accel-Redirect.
    x_accel_redirect: str | None = None
    # Request fields that origins use to build URLs or pick a method but that are not part
    # of the cache key: a shared fill never forwards them, so one client cannot shape what
    # every other client then receives (cache poisoning).
    unkeyed_request_fields: frozenset[str] = frozenset(DEFAULT_UNKEYED_REQUEST_FIELDS)
    client_header_timeout: float = 10.0  # seconds a client has for a whole request head
    client_idle_timeout: float = 60.0  # seconds a keep-alive connection may sit idle
    client_send_timeout: float = 60.0  # seconds a response may wait for the client to read
    max_header_size: int = 64 * 1024  # bytes of a request head; past that, 431
    max_header_fields: int = 100  # header fields in a request head; past that, 431
    max_connections: int | None = None  # client connections per worker; None: 1000 or what fits
    # The cache key (docs/cache-key.md): the query as keyed and fetched, and Accept by class.
    sort_query_params: bool = False
    drop_query_params: tuple[str, ...] = ()  # glob patterns of query parameter names
    signed_query_params: frozenset[str] = frozenset()  # never dropped
    vary_accept_classes: tuple[str, ...] = ()  # e.g. ("avif", "webp"); (): Accept as sent
    # The image service URL grammar that names each request's source image, for purges
    # by source (proxy/source_url.py); "none": entries have no source.
    source_grammar: str = "none"
    warm_concurrency: int = 4  # warm-up requests in flight at once
    warm_rate: float = 0.0  # warm-up requests started per second; 0: bounded by concurrency only

    def __post_init__(self) -> None:
        why = refused_drop(self.drop_query_params, self.signed_query_params)
        if why is not None:
            raise ConfigError("drop_query_params", why)

    @property
    def ttl_policy(self) -> TtlPolicy:
        return TtlPolicy(self.max_ttl, self.max_error_ttl, self.default_ttl)

    @property
    def targeted_fields(self) -> tuple[str, ...]:
        """RFC 9213 target list, most specific first."""
        return (self.cache_control_field, "CDN-Cache-Control", "Surrogate-Control")

    log_format: str = "auto"  # auto (JSON unless stdout is a TTY), json or console
    log_level: str = "info"
    # From the standard OTEL_* variables, not PIXCACHE_* ones (proxy/tracing/settings.py).
    tracing: TraceSettings = TraceSettings()


def build_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """The one place settings are read and validated. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    config_file = flags.get("config") or environ.get("PIXCACHE_CONFIG")
    file_values = read_toml(Path(config_file)) if config_file else {}
    raw = merge_sources(flags, environ, file_values)
    for name in REQUIRED:
        if name not in raw:
            raise ConfigError(name, "is required")
    parsed = {name: SETTINGS[name](name, value) for name, value in raw.items()}
    host, port = parsed.pop("listen", ("127.0.0.1", 8080))
    admin_host, admin_port = parsed.pop("admin_listen", ("127.0.0.1", 8081))
    if "admin_token" not in parsed and not _is_loopback(admin_host):
        raise ConfigError(
            "admin_token",
            f"is required: the admin listener on {admin_host} is not loopback-only "
            "(set PIXCACHE_ADMIN_TOKEN, or keep --admin-listen on 127.0.0.1)",
        )
    if "readiness_path" in parsed and parsed["readiness_path"] == parsed.get("liveness_path"):
        raise ConfigError("readiness_path", "must differ from --liveness-path")
    deadline_names = {f.name: f"{f.name}_timeout" for f in fields(Deadlines)}
    deadline_names["headers"] = "header_timeout"
    deadlines = Deadlines(
        **{field: parsed.pop(name) for field, name in deadline_names.items() if name in parsed}
    )
    return Config(
        host=host,
        port=port,
        admin_host=admin_host,
        admin_port=admin_port,
        deadlines=deadlines,
        tracing=trace_settings(environ),
        **parsed,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
