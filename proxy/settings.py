"""What each setting accepts: one parser per setting, in the table SETTINGS whose names are
the TOML keys (flags and PIXCACHE_* variables derive from them), and how the sources are
read and merged. proxy/config.py builds the frozen Config from what these return."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from proxy.policy.cache_key import query_name_patterns, query_names, setting_items
from proxy.policy.format_class import format_classes


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it as a user would write it."""

    def __init__(self, setting: str, message: str) -> None:
        flag = "--" + setting.replace("_", "-")
        env = "PIXCACHE_" + setting.upper()
        # A variable of the OpenTelemetry SDK (OTEL_*) is named as the user writes it.
        where = setting if setting.isupper() else f"{flag} ({env})"
        super().__init__(f"invalid setting {where}: {message}")
        self.setting = setting


@dataclass(frozen=True)
class Origin:
    scheme: str  # "http", "https", "file" or "s3"
    base_url: str  # http(s): scheme://host[:port] plus path prefix without trailing slash
    root: Path | None = None  # file: the folder served
    bucket: str = ""  # s3: the bucket
    prefix: str = ""  # s3: the key prefix, without leading or trailing slash ("": none)


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
    return frozenset(_field_name(setting, name).lower() for name in setting_items(raw))


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


def _probe_path(setting: str, raw: Any) -> str:
    """A path answered by pixcache itself on the serving port, e.g. /_pixcache/ready: plain
    characters only, so that it names one path whatever the decoding (no %, no dot
    segments), and never / (that would hide the origin's root)."""
    text = str(raw)
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/")
    segments = text[1:].split("/")
    if (
        isinstance(raw, bool)
        or not text.startswith("/")
        or text == "/"
        or not set(text) <= allowed
        or any(seg in ("", ".", "..") for seg in segments)
    ):
        raise ConfigError(setting, f"must be a URI path like /_pixcache/health, got {raw!r}")
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


def _per_second(setting: str, raw: Any) -> float:
    """A rate: a number of events per second, 0 or more."""
    try:
        value = float(raw) if not isinstance(raw, bool) else -1.0
    except (TypeError, ValueError):
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ConfigError(setting, f"must be a number per second, 0 or more, got {raw!r}")
    return value


def _parsed_by(parse: Callable[[Any], Any]) -> Callable[[str, Any], Any]:
    """A setting read by a function that raises ValueError saying what is wrong."""

    def parse_setting(setting: str, raw: Any) -> Any:
        try:
            return parse(raw)
        except ValueError as exc:
            raise ConfigError(setting, str(exc)) from None

    return parse_setting


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
    "shutdown_delay": _non_negative_seconds,
    "liveness_path": _probe_path,
    "readiness_path": _probe_path,
    "x_accel_redirect": _uri_prefix,
    "unkeyed_request_fields": _field_names,
    "client_header_timeout": _positive_seconds,
    "client_idle_timeout": _positive_seconds,
    "client_send_timeout": _positive_seconds,
    "max_header_size": _bytes_between(1024, 1 << 20),
    "max_header_fields": _count(1, 10_000),
    "max_connections": _count(1, 1_000_000),
    "sort_query_params": _flag,
    "drop_query_params": _parsed_by(query_name_patterns),
    "signed_query_params": _parsed_by(query_names),
    "vary_accept_classes": _parsed_by(format_classes),
    "source_grammar": _choice("none", "imgproxy", "imagor", "thumbor"),
    "warm_concurrency": _count(1, 1024),
    "warm_rate": _per_second,
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
