"""Configuration: built once at start from flags > PIXCACHE_* environment > TOML file >
defaults, validated, frozen. Nothing else in pixcache reads the environment."""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from proxy.policy.freshness import TtlPolicy


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it as a user would write it."""

    def __init__(self, setting: str, message: str) -> None:
        flag = "--" + setting.replace("_", "-")
        env = "PIXCACHE_" + setting.upper()
        super().__init__(f"invalid setting {flag} ({env}): {message}")
        self.setting = setting


@dataclass(frozen=True)
class Origin:
    scheme: str  # "http", "https", "file" or "s3"
    base_url: str  # http(s): scheme://host[:port] plus path prefix without trailing slash
    root: Path | None = None  # file: the folder served
    bucket: str = ""  # s3: the bucket
    prefix: str = ""  # s3: the key prefix, without leading or trailing slash ("": none)


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

    @property
    def ttl_policy(self) -> TtlPolicy:
        return TtlPolicy(self.max_ttl, self.max_error_ttl, self.default_ttl)

    @property
    def targeted_fields(self) -> tuple[str, ...]:
        """RFC 9213 target list, most specific first."""
        return (self.cache_control_field, "CDN-Cache-Control", "Surrogate-Control")

    log_format: str = "auto"  # auto (JSON unless stdout is a TTY), json or console
    log_level: str = "info"


# name -> (parser, default). The names are the TOML keys; flags and variables derive from them.
def _positive_seconds(setting: str, raw: Any) -> float:
    if isinstance(raw, bool):  # TOML `true` is not a number of seconds
        raise ConfigError(setting, f"must be a number of seconds, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(setting, f"must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(setting, f"must be a positive number of seconds, got {raw!r}")
    return value


UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _bytes(setting: str, raw: Any) -> int:
    """A size in bytes, with an optional K/M/G/T suffix (powers of 1024), e.g. 100M."""
    text = str(raw).strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:].isalpha() else ""
    number = text[: len(text) - len(unit)]
    if isinstance(raw, bool) or unit not in UNITS or not number.isdigit():
        raise ConfigError(setting, f"must be a size in bytes like 512M or 10G, got {raw!r}")
    return int(number) * UNITS[unit]


def _positive_bytes(setting: str, raw: Any) -> int:
    value = _bytes(setting, raw)
    if value <= 0:
        raise ConfigError(setting, f"must be more than 0 bytes, got {raw!r}")
    return value


# A hit holds a checked body in memory while it is sent, and the image guard holds up to its
# probe size per fill while it waits to judge a body: more than this is too much for either.
MAX_HELD_BODY_BYTES = 64 << 20


def _held_bytes(low: int, why: str) -> Callable[[str, Any], int]:
    def parse(setting: str, raw: Any) -> int:
        value = _bytes(setting, raw)
        if value < low:
            raise ConfigError(setting, f"must be at least {low} bytes, got {raw!r}")
        if value > MAX_HELD_BODY_BYTES:
            raise ConfigError(setting, f"must be at most 64M ({why}), got {raw!r}")
        return value

    return parse


def _bytes_between(low: int, high: int) -> Callable[[str, Any], int]:
    def parse(setting: str, raw: Any) -> int:
        value = _bytes(setting, raw)
        if not low <= value <= high:
            raise ConfigError(setting, f"must be from {low} to {high} bytes, got {raw!r}")
        return value

    return parse


def _non_negative_seconds(setting: str, raw: Any) -> float:
    return 0.0 if str(raw).strip() in ("0", "0.0") else _positive_seconds(setting, raw)


def _field_name(setting: str, raw: Any) -> str:
    text = str(raw).strip()
    if not text or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in text):
        raise ConfigError(setting, f"must be a header field name, got {raw!r}")
    return text


def _field_names(setting: str, raw: Any) -> frozenset[str]:
    """Header field names, comma-separated (or a TOML list); empty for none."""
    items = raw if isinstance(raw, list) else str(raw).split(",")
    names = [str(item).strip() for item in items if str(item).strip()]
    return frozenset(_field_name(setting, name).lower() for name in names)


def _count(low: int, high: int) -> Callable[[str, Any], int]:
    def parse(setting: str, raw: Any) -> int:
        text = str(raw).strip()
        if isinstance(raw, bool) or not text.isdigit() or not low <= int(text) <= high:
            raise ConfigError(setting, f"must be a whole number from {low} to {high}, got {raw!r}")
        return int(text)

    return parse


def _flag(setting: str, raw: Any) -> bool:
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(setting, f"must be true or false, got {raw!r}")


def _token(setting: str, raw: Any) -> str:
    text = str(raw)
    if len(text) < 16 or not text.isprintable() or " " in text:
        raise ConfigError(setting, "must be at least 16 printable characters without spaces")
    return text


def _workers(setting: str, raw: Any) -> int:
    text = str(raw).strip()
    if isinstance(raw, bool) or not text.isdigit() or not 1 <= int(text) <= 256:
        raise ConfigError(setting, f"must be a whole number from 1 to 256, got {raw!r}")
    return int(text)


def _origin(setting: str, raw: Any) -> Origin:
    text = str(raw)
    parts = urlsplit(text)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ConfigError(setting, f"{text!r} has no host")
        if parts.query or parts.fragment:
            raise ConfigError(setting, f"{text!r} may not have a query or fragment")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            raise ConfigError(setting, f"{text!r} has an invalid port") from None
        return Origin(parts.scheme, f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}")
    if parts.scheme == "s3":
        return _s3_origin(setting, text, parts.netloc, parts.path, parts.query or parts.fragment)
    if parts.scheme == "file":
        # file:///abs/dir, or file://relative/dir as a convenience.
        root = Path(parts.netloc + parts.path).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(setting, f"folder {str(root)!r} does not exist")
        return Origin("file", text, root)
    raise ConfigError(setting, f"{text!r} must start with http://, https://, s3:// or file://")


# Bucket names as S3 (and the older us-east-1 rules, Ceph, MinIO) allow them.
_BUCKET_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


def _s3_origin(setting: str, text: str, bucket: str, path: str, extra: str) -> Origin:
    """s3://BUCKET[/PREFIX]: the prefix is a key prefix of whole segments (no empty,
    `.` or `..` segment), so no request can name a key outside it."""
    if not bucket or not set(bucket) <= _BUCKET_CHARS or len(bucket) > 255:
        raise ConfigError(setting, f"{text!r} needs a bucket name: s3://BUCKET[/PREFIX]")
    if extra:
        raise ConfigError(setting, f"{text!r} may not have a query or fragment")
    prefix = unquote(path).strip("/")
    if prefix and any(segment in ("", ".", "..") for segment in prefix.split("/")):
        raise ConfigError(setting, f"{text!r}: the prefix may not have empty, . or .. segments")
    base_url = f"s3://{bucket}" + (f"/{prefix}" if prefix else "")
    return Origin("s3", base_url, bucket=bucket, prefix=prefix)


def _endpoint_url(setting: str, raw: Any) -> str:
    text = str(raw).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(setting, f"must be an http:// or https:// URL, got {raw!r}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ConfigError(setting, f"{text!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise ConfigError(setting, f"{text!r} may not have a query or fragment")
    return text.rstrip("/")


def _region(setting: str, raw: Any) -> str:
    text = str(raw).strip()
    if isinstance(raw, bool) or not text or not all(c.isalnum() or c in "-_" for c in text):
        raise ConfigError(setting, f"must be a region name like eu-west-1, got {raw!r}")
    return text


def _header_value(setting: str, raw: Any) -> str:
    """A header field value ("" for none); CR, LF and NUL could split the header."""
    if not isinstance(raw, str) or any(c in raw for c in "\r\n\0"):
        raise ConfigError(setting, f"must be a header value like 'max-age=3600', got {raw!r}")
    return raw.strip()


def _uri_prefix(setting: str, raw: Any) -> str:
    """A URI path prefix such as /_pixcache/bodies/: it goes into a response header."""
    text = str(raw)
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/")
    segments = text.strip("/").split("/")
    if (
        isinstance(raw, bool)
        or not text.startswith("/")
        or not text.endswith("/")
        or not set(text) <= allowed
        or any(seg in ("", ".", "..") for seg in segments)
    ):
        raise ConfigError(
            setting, f"must be a URI path prefix like /_pixcache/bodies/, got {raw!r}"
        )
    return text


def _listen(setting: str, raw: Any) -> tuple[str, int]:
    host, sep, port_text = str(raw).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(setting, f"must be HOST:PORT, got {raw!r}")
    return host, int(port_text)


def _choice(*allowed: str) -> Callable[[str, Any], str]:
    def parse(setting: str, raw: Any) -> str:
        value = str(raw).lower()
        if value not in allowed:
            raise ConfigError(setting, f"must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _path(setting: str, raw: Any) -> Path:
    if not str(raw):
        raise ConfigError(setting, "must not be empty")
    return Path(str(raw)).expanduser()


SETTINGS: dict[str, Callable[[str, Any], Any]] = {
    "origin": _origin,
    "listen": _listen,
    "cache_dir": _path,
    "connect_timeout": _positive_seconds,
    "tls_timeout": _positive_seconds,
    "header_timeout": _positive_seconds,
    "read_timeout": _positive_seconds,
    "total_timeout": _positive_seconds,
    "origin_ca_file": _path,
    "s3_endpoint_url": _endpoint_url,
    "s3_region": _region,
    "s3_addressing_style": _choice("auto", "path", "virtual"),
    "s3_default_cache_control": _header_value,
    "s3_not_found_cache_control": _header_value,
    "workers": _workers,
    "max_size": _positive_bytes,
    "min_free": _bytes,
    "max_object_size": _positive_bytes,
    "stale_grace": _non_negative_seconds,
    "scrub_rate": _bytes,
    "verify_on_hit_max_size": _held_bytes(0, "a checked body is held in memory while sent"),
    "hot_cache_size": _bytes_between(0, 1 << 30),
    "grace": _non_negative_seconds,
    "max_ttl": _non_negative_seconds,
    "max_error_ttl": _non_negative_seconds,
    "default_ttl": _non_negative_seconds,
    "cache_control_field": _field_name,
    "verify_images": _choice("off", "header", "decode"),
    "max_image_width": _count(1, 1 << 20),
    "max_image_height": _count(1, 1 << 20),
    "max_image_pixels": _count(1, 1 << 40),
    "max_image_frames": _count(1, 100_000),
    "refuse_invalid_images": _flag,
    "image_probe_bytes": _held_bytes(1, "held in memory per fill until judged"),
    "image_probe_seconds": _positive_seconds,
    "max_fills": _count(1, 100_000),
    "fill_queue": _count(0, 1_000_000),
    "max_rss": _positive_bytes,
    "admin_listen": _listen,
    "admin_token": _token,
    "tag_header": _field_name,
    "shutdown_grace": _non_negative_seconds,
    "x_accel_redirect": _uri_prefix,
    "unkeyed_request_fields": _field_names,
    "client_header_timeout": _positive_seconds,
    "client_idle_timeout": _positive_seconds,
    "client_send_timeout": _positive_seconds,
    "max_header_size": _bytes_between(1024, 1 << 20),
    "max_header_fields": _count(1, 10_000),
    "max_connections": _count(1, 1_000_000),
    "log_format": _choice("auto", "json", "console"),
    "log_level": _choice("debug", "info", "warning", "error"),
}
REQUIRED = ("origin", "cache_dir")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{str(path)!r} is not valid TOML: {exc}") from None
    normalized = {key.replace("-", "_"): value for key, value in data.items()}
    for key in normalized:
        if key not in SETTINGS:
            raise ConfigError(key, f"unknown key {key!r} in {str(path)!r}")
    return normalized


def merge_sources(
    flags: Mapping[str, Any], environ: Mapping[str, str], file_values: Mapping[str, Any]
) -> dict[str, Any]:
    """Flags win over the environment, the environment over the file."""
    merged: dict[str, Any] = {}
    for name in SETTINGS:
        env_value = environ.get("PIXCACHE_" + name.upper())
        for value in (flags.get(name), env_value or None, file_values.get(name)):
            if value is not None:
                merged[name] = value
                break
    return merged


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
        **parsed,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
