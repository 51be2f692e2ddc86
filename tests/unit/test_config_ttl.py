"""The freshness-lifetime settings: --max-ttl, --max-error-ttl, --default-ttl (flags,
PIXCACHE_* variables and TOML keys), validated like every other setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import parser
from proxy.config import ConfigError, build_config
from proxy.policy.freshness import TtlPolicy

ORIGIN = "http://origin.test:8081"
NAMES = ["max_ttl", "max_error_ttl", "default_ttl"]


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return {"origin": ORIGIN, "cache_dir": str(tmp_path / "cache")}


def test_defaults_bound_errors_only(base: dict[str, str]) -> None:
    """max_ttl: unbounded; max_error_ttl: 60 s; default_ttl: off."""
    config = build_config(base, environ={})
    assert (config.max_ttl, config.max_error_ttl, config.default_ttl) == (None, 60.0, 0.0)
    assert config.ttl_policy == TtlPolicy(max_ttl=None, max_error_ttl=60.0, default_ttl=0.0)


@pytest.mark.parametrize(
    ("name", "text", "toml", "expected"),
    [
        ("max_ttl", "3600", "3600", TtlPolicy(3600.0, 60.0, 0.0)),
        ("max_ttl", "0", "0", TtlPolicy(0.0, 60.0, 0.0)),  # nothing is ever fresh
        ("max_ttl", "0.5", "0.5", TtlPolicy(0.5, 60.0, 0.0)),
        ("max_error_ttl", "1", "1", TtlPolicy(None, 1.0, 0.0)),
        ("max_error_ttl", "0", "0", TtlPolicy(None, 0.0, 0.0)),
        ("max_error_ttl", "86400", "86400", TtlPolicy(None, 86400.0, 0.0)),
        ("default_ttl", "300", "300", TtlPolicy(None, 60.0, 300.0)),
        ("default_ttl", "0", "0", TtlPolicy(None, 60.0, 0.0)),
    ],
)
@pytest.mark.parametrize("source", ["flag", "environment", "toml"])
def test_ttl_settings_from_every_source(
    base: dict[str, str],
    tmp_path: Path,
    name: str,
    text: str,
    toml: str,
    expected: TtlPolicy,
    source: str,
) -> None:
    if source == "flag":
        config = build_config({**base, name: text}, environ={})
    elif source == "environment":
        config = build_config(base, environ={"PIXCACHE_" + name.upper(): text})
    else:
        file = tmp_path / "pixcache.toml"
        file.write_text(f"{name.replace('_', '-')} = {toml}\n", encoding="utf-8")
        config = build_config({**base, "config": str(file)}, environ={})
    assert config.ttl_policy == expected


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", ["abc", "-1", "-0.5", "nan", "inf", "1e400", "60s", "1m"])
def test_invalid_ttl_is_refused_with_its_names(base: dict[str, str], name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({**base, name: value}, environ={})
    message = str(info.value)
    assert "--" + name.replace("_", "-") in message
    assert "PIXCACHE_" + name.upper() in message
    assert repr(value) in message
    assert info.value.setting == name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", ["true", '"abc"', "-5", "[1]"])
def test_invalid_ttl_in_toml_is_refused(
    base: dict[str, str], tmp_path: Path, name: str, value: str
) -> None:
    file = tmp_path / "c.toml"
    file.write_text(f"{name} = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        build_config({**base, "config": str(file)}, environ={})
    assert info.value.setting == name


@pytest.mark.parametrize("flag", ["--max-ttl", "--max-error-ttl", "--default-ttl"])
def test_ttl_flags_are_documented_in_help(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert flag in text
    assert "PIXCACHE_" + flag.removeprefix("--").replace("-", "_").upper() in text
