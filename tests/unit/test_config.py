"""build_config: flags > PIXCACHE_* environment > TOML file > defaults, validated once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from proxy.config import Config, ConfigError, Deadlines, Origin, build_config

ORIGIN = "http://origin.test:8081"


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    """The two required settings, as flags."""
    return {"origin": ORIGIN, "cache_dir": str(tmp_path / "cache")}


def test_defaults(base: dict[str, str], tmp_path: Path) -> None:
    config = build_config(base, environ={})
    assert config == Config(
        origin=Origin("http", ORIGIN),
        cache_dir=tmp_path / "cache",
        host="127.0.0.1",
        port=8080,
        deadlines=Deadlines(connect=5.0, tls=5.0, headers=30.0, read=30.0, total=300.0),
        origin_ca_file=None,
        log_format="auto",
        log_level="info",
    )


def test_config_is_frozen(base: dict[str, str]) -> None:
    config = build_config(base, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.deadlines.connect = 1.0  # type: ignore[misc]


# Every setting: (name, value as text, value in TOML syntax, how to read it back, expected).
SETTINGS: list[tuple[str, str, str, Any, Any]] = [
    (
        "origin",
        "https://img.test/prefix",
        '"https://img.test/prefix"',
        lambda c: c.origin,
        Origin("https", "https://img.test/prefix"),
    ),
    ("listen", "0.0.0.0:9001", '"0.0.0.0:9001"', lambda c: (c.host, c.port), ("0.0.0.0", 9001)),
    ("cache_dir", "/srv/pixcache", '"/srv/pixcache"', lambda c: c.cache_dir, Path("/srv/pixcache")),
    ("connect_timeout", "1.5", "1.5", lambda c: c.deadlines.connect, 1.5),
    ("tls_timeout", "2.5", "2.5", lambda c: c.deadlines.tls, 2.5),
    ("header_timeout", "3.5", "3.5", lambda c: c.deadlines.headers, 3.5),
    ("read_timeout", "4.5", "4.5", lambda c: c.deadlines.read, 4.5),
    ("total_timeout", "600", "600", lambda c: c.deadlines.total, 600.0),
    (
        "origin_ca_file",
        "/etc/ca.pem",
        '"/etc/ca.pem"',
        lambda c: c.origin_ca_file,
        Path("/etc/ca.pem"),
    ),
    (
        "x_accel_redirect",
        "/_pixcache/bodies/",
        '"/_pixcache/bodies/"',
        lambda c: c.x_accel_redirect,
        "/_pixcache/bodies/",
    ),
    ("log_format", "console", '"console"', lambda c: c.log_format, "console"),
    ("log_level", "debug", '"debug"', lambda c: c.log_level, "debug"),
    ("scrub_rate", "0", "0", lambda c: c.scrub_rate, 0),
    ("image_probe_bytes", "4M", '"4M"', lambda c: c.image_probe_bytes, 4 << 20),
    ("image_probe_seconds", "0.5", "0.5", lambda c: c.image_probe_seconds, 0.5),
    (
        "verify_on_hit_max_size",
        "256K",
        '"256K"',
        lambda c: c.verify_on_hit_max_size,
        256 * 1024,
    ),
]
SETTING_IDS = [s[0] for s in SETTINGS]


@pytest.mark.parametrize(("name", "text", "toml", "read", "expected"), SETTINGS, ids=SETTING_IDS)
def test_every_setting_from_a_flag(
    base: dict[str, str], name: str, text: str, toml: str, read: Any, expected: Any
) -> None:
    assert read(build_config({**base, name: text}, environ={})) == expected


@pytest.mark.parametrize(("name", "text", "toml", "read", "expected"), SETTINGS, ids=SETTING_IDS)
def test_every_setting_from_the_environment(
    tmp_path: Path, name: str, text: str, toml: str, read: Any, expected: Any
) -> None:
    environ = {
        "PIXCACHE_ORIGIN": ORIGIN,
        "PIXCACHE_CACHE_DIR": str(tmp_path),
        "PIXCACHE_" + name.upper(): text,
    }
    assert read(build_config({}, environ=environ)) == expected


@pytest.mark.parametrize(("name", "text", "toml", "read", "expected"), SETTINGS, ids=SETTING_IDS)
@pytest.mark.parametrize("spelling", ["snake", "kebab"])
def test_every_setting_from_the_toml_file(
    tmp_path: Path, name: str, text: str, toml: str, read: Any, expected: Any, spelling: str
) -> None:
    key = name if spelling == "snake" else name.replace("_", "-")
    lines = {"origin": f'"{ORIGIN}"', "cache_dir": f'"{tmp_path}"'}
    lines.pop(name, None)
    lines[key] = toml
    file = write_toml(tmp_path / "pixcache.toml", "".join(f"{k} = {v}\n" for k, v in lines.items()))
    assert read(build_config({"config": str(file)}, environ={})) == expected


# -- precedence -----------------------------------------------------------------------------


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    return write_toml(
        tmp_path / "pixcache.toml",
        f'origin = "{ORIGIN}"\ncache_dir = "{tmp_path / "from-file"}"\n'
        'connect_timeout = 3\nlog_level = "warning"\nlisten = "10.0.0.3:3333"\n',
    )


def test_precedence_flag_over_environment_over_file_over_default(toml_file: Path) -> None:
    environ = {
        "PIXCACHE_CONFIG": str(toml_file),
        "PIXCACHE_CONNECT_TIMEOUT": "2",
        "PIXCACHE_LOG_LEVEL": "error",
    }
    config = build_config({"connect_timeout": "1"}, environ=environ)
    assert config.deadlines.connect == 1.0  # flag
    assert config.log_level == "error"  # environment over file
    assert (config.host, config.port) == ("10.0.0.3", 3333)  # file over default
    assert config.deadlines.tls == 5.0  # default
    assert config.cache_dir == toml_file.parent / "from-file"


def test_environment_over_file(toml_file: Path) -> None:
    environ = {"PIXCACHE_CONNECT_TIMEOUT": "2"}
    config = build_config({"config": str(toml_file)}, environ=environ)
    assert config.deadlines.connect == 2.0
    assert config.log_level == "warning"


def test_file_over_default(toml_file: Path) -> None:
    config = build_config({"config": str(toml_file)}, environ={})
    assert config.deadlines.connect == 3.0
    assert config.deadlines.read == 30.0


def test_empty_environment_variable_does_not_hide_the_file(toml_file: Path) -> None:
    config = build_config({"config": str(toml_file)}, environ={"PIXCACHE_CONNECT_TIMEOUT": ""})
    assert config.deadlines.connect == 3.0


def test_config_flag_wins_over_pixcache_config(toml_file: Path, tmp_path: Path) -> None:
    other = write_toml(tmp_path / "other.toml", "connect_timeout = 9\n")
    config = build_config({"config": str(toml_file)}, environ={"PIXCACHE_CONFIG": str(other)})
    assert config.deadlines.connect == 3.0


def test_explicit_environ_is_the_only_environment_read(
    base: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXCACHE_CONNECT_TIMEOUT", "abc")
    monkeypatch.setenv("PIXCACHE_LOG_LEVEL", "debug")
    config = build_config(base, environ={})
    assert config.deadlines.connect == 5.0
    assert config.log_level == "info"


def test_os_environ_is_read_by_default(
    base: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXCACHE_LOG_LEVEL", "debug")
    assert build_config(base).log_level == "debug"


# -- validation: the error names the flag and the variable ----------------------------------


def assert_names(exc: ConfigError, setting: str) -> None:
    flag = "--" + setting.replace("_", "-")
    assert flag in str(exc)
    assert "PIXCACHE_" + setting.upper() in str(exc)
    assert exc.setting == setting


TIMEOUTS = ["connect_timeout", "tls_timeout", "header_timeout", "read_timeout", "total_timeout"]


@pytest.mark.parametrize("name", TIMEOUTS)
@pytest.mark.parametrize(
    "value", ["abc", "", "0", "0.0", "-1", "-0.5", "nan", "NaN", "inf", "-inf", "1e400", "5s"]
)
def test_invalid_timeout_is_refused_with_its_names(
    base: dict[str, str], name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({**base, name: value}, environ={})
    assert_names(info.value, name)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf"])
def test_invalid_timeout_from_environment_names_flag_and_variable(
    base: dict[str, str], value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(base, environ={"PIXCACHE_CONNECT_TIMEOUT": value})
    assert_names(info.value, "connect_timeout")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", '"abc"', "[1]", "{}"])
def test_invalid_timeout_from_toml_names_flag_and_variable(
    tmp_path: Path, base: dict[str, str], value: str
) -> None:
    file = write_toml(tmp_path / "c.toml", f"read_timeout = {value}\n")
    with pytest.raises(ConfigError) as info:
        build_config({**base, "config": str(file)}, environ={})
    assert_names(info.value, "read_timeout")


def test_toml_boolean_timeout_is_refused(tmp_path: Path, base: dict[str, str]) -> None:
    file = write_toml(tmp_path / "c.toml", "read_timeout = true\n")
    with pytest.raises(ConfigError) as info:
        build_config({**base, "config": str(file)}, environ={})
    assert_names(info.value, "read_timeout")


@pytest.mark.parametrize(("value", "seconds"), [("0.25", 0.25), (" 2 ", 2.0), ("1e3", 1000.0)])
def test_valid_timeout_forms(base: dict[str, str], value: str, seconds: float) -> None:
    assert build_config({**base, "total_timeout": value}, environ={}).deadlines.total == seconds


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("0.0.0.0:1", "0.0.0.0", 1),
        ("localhost:65535", "localhost", 65535),
        ("[::1]:8081", "::1", 8081),
        ("[::]:0", "::", 0),
    ],
)
def test_valid_listen(base: dict[str, str], value: str, host: str, port: int) -> None:
    config = build_config({**base, "listen": value}, environ={})
    assert (config.host, config.port) == (host, port)


@pytest.mark.parametrize(
    "value",
    [
        "8080",
        "localhost",
        "localhost:",
        ":8080",
        "[]:8080",
        "host:http",
        "host:65536",
        "host:-1",
        "host:80:",
        "",
    ],
)
def test_invalid_listen(base: dict[str, str], value: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({**base, "listen": value}, environ={})
    assert_names(info.value, "listen")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:9", Origin("http", "http://127.0.0.1:9")),
        ("http://origin.test", Origin("http", "http://origin.test")),
        ("http://origin.test/", Origin("http", "http://origin.test")),
        # An empty query is no query (urlsplit gives ""): accepted, the "?" dropped.
        ("http://origin.test/?", Origin("http", "http://origin.test")),
        ("https://cdn.test/images/v2/", Origin("https", "https://cdn.test/images/v2")),
        ("HTTPS://cdn.test:8443/a", Origin("https", "https://cdn.test:8443/a")),
    ],
)
def test_http_origins(base: dict[str, str], value: str, expected: Origin) -> None:
    assert build_config({**base, "origin": value}, environ={}).origin == expected


def test_file_origin_existing_folder(base: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    origin = build_config({**base, "origin": f"file://{folder}"}, environ={}).origin
    assert origin.scheme == "file"
    assert origin.root == folder.resolve()


@pytest.mark.parametrize("make", ["missing", "regular_file"])
def test_file_origin_must_be_an_existing_folder(
    base: dict[str, str], tmp_path: Path, make: str
) -> None:
    target = tmp_path / "images"
    if make == "regular_file":
        target.write_bytes(b"not a folder")
    with pytest.raises(ConfigError) as info:
        build_config({**base, "origin": f"file://{target}"}, environ={})
    assert_names(info.value, "origin")
    assert str(target) in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        "ftp://origin.test/images",
        "gopher://origin.test",
        "origin.test",
        "/srv/images",
        "http://origin.test/images?sig=abc",
        "http://origin.test/images#frag",
        "http:///images",
        "http://origin.test:http",
        "http://origin.test:99999",
        "",
    ],
)
def test_invalid_origins_are_refused(base: dict[str, str], value: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({**base, "origin": value}, environ={})
    assert_names(info.value, "origin")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("log_format", "JSON", "json"), ("log_level", "WARNING", "warning")],
)
def test_choices_are_case_insensitive(
    base: dict[str, str], name: str, value: str, expected: str
) -> None:
    assert getattr(build_config({**base, name: value}, environ={}), name) == expected


@pytest.mark.parametrize(("name", "value"), [("log_format", "xml"), ("log_level", "trace")])
def test_invalid_choices_are_refused(base: dict[str, str], name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({**base, name: value}, environ={})
    assert_names(info.value, name)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("image_probe_bytes", "0"),
        ("image_probe_bytes", "65M"),
        ("image_probe_bytes", "lots"),
        ("image_probe_seconds", "0"),
        ("image_probe_seconds", "-1"),
    ],
)
def test_invalid_image_probe_limits_are_refused(
    base: dict[str, str], name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({**base, name: value}, environ={})
    assert_names(info.value, name)


@pytest.mark.parametrize("name", ["cache_dir", "origin_ca_file"])
def test_empty_path_is_refused(base: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({**base, name: ""}, environ={})
    assert_names(info.value, name)


def test_cache_dir_expands_user(base: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert build_config({**base, "cache_dir": "~/cache"}, environ={}).cache_dir == Path(
        "/home/someone/cache"
    )


@pytest.mark.parametrize("missing", ["origin", "cache_dir"])
def test_required_settings(base: dict[str, str], missing: str) -> None:
    flags = {k: v for k, v in base.items() if k != missing}
    with pytest.raises(ConfigError) as info:
        build_config(flags, environ={})
    assert_names(info.value, missing)
    assert "required" in str(info.value)


# -- the TOML file ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["bogus", "connect-timout", "config", "port"])
def test_unknown_toml_key_is_refused(base: dict[str, str], tmp_path: Path, key: str) -> None:
    file = write_toml(tmp_path / "c.toml", f'{key} = "1"\n')
    with pytest.raises(ConfigError) as info:
        build_config({**base, "config": str(file)}, environ={})
    assert key.replace("-", "_") in str(info.value)
    assert str(file) in str(info.value)


@pytest.mark.parametrize("text", ["origin = ", "[section\n", 'origin = "a"\norigin = "b"\n', "= 1"])
def test_invalid_toml_names_the_config_setting(
    base: dict[str, str], tmp_path: Path, text: str
) -> None:
    file = write_toml(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as info:
        build_config({**base, "config": str(file)}, environ={})
    assert_names(info.value, "config")
    assert "TOML" in str(info.value)


@pytest.mark.parametrize("via", ["flag", "environment"])
def test_missing_config_file_names_the_config_setting(
    base: dict[str, str], tmp_path: Path, via: str
) -> None:
    missing = str(tmp_path / "absent.toml")
    flags = {**base, "config": missing} if via == "flag" else base
    environ = {"PIXCACHE_CONFIG": missing} if via == "environment" else {}
    with pytest.raises(ConfigError) as info:
        build_config(flags, environ=environ)
    assert_names(info.value, "config")
    assert missing in str(info.value)


@pytest.mark.parametrize(
    "value",
    ["bodies/", "/bodies", "", "/", "//", "/a//b/", "/a/../b/", "/a b/", "/a\r\nX: y/", "/é/"],
)
def test_invalid_x_accel_redirect_prefix_is_refused(base: dict[str, str], value: str) -> None:
    """It goes into a response header that nginx follows: only a plain path prefix will do."""
    with pytest.raises(ConfigError) as info:
        build_config({**base, "x_accel_redirect": value}, environ={})
    assert_names(info.value, "x_accel_redirect")


def test_integrity_checks_are_on_by_default(base: dict[str, str]) -> None:
    """Hits checksum bodies up to 1 MiB, and the scrubber re-reads the cache at 4 MiB/s."""
    config = build_config(base, environ={})
    assert config.verify_on_hit_max_size == 1 << 20
    assert config.scrub_rate == 4 << 20
    assert (
        build_config({**base, "verify_on_hit_max_size": "0"}, environ={}).verify_on_hit_max_size
        == 0
    )


@pytest.mark.parametrize("value", ["65M", "1G", "-1", "1.5M", "lots", "true"])
def test_invalid_verify_on_hit_max_size_is_refused(base: dict[str, str], value: str) -> None:
    """A checked body is held in memory while it is sent: at most 64M, and a plain size."""
    with pytest.raises(ConfigError) as info:
        build_config({**base, "verify_on_hit_max_size": value}, environ={})
    assert_names(info.value, "verify_on_hit_max_size")
