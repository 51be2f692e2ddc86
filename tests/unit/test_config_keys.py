"""The cache-key settings: --sort-query-params, --drop-query-params, --signed-query-params and
--vary-accept-classes (flags, PIXCACHE_* variables and TOML keys), validated at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import parser
from proxy.config import ConfigError, build_config
from proxy.request_key import RequestKeying

ORIGIN = "http://origin.test:8081"


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return {"origin": ORIGIN, "cache_dir": str(tmp_path / "cache")}


def test_defaults_key_requests_as_received(base: dict[str, str]) -> None:
    config = build_config(base, environ={})
    keying = RequestKeying.of(config)
    assert not keying.query.active and keying.classes == ()
    assert keying.target("/a?utm_source=x&b=2&a=1") == "/a?utm_source=x&b=2&a=1"


SETTINGS: list[tuple[str, str, str, Any]] = [
    ("sort_query_params", "true", "true", True),
    ("drop_query_params", "utm_*, fbclid", '["utm_*", "fbclid"]', ("utm_*", "fbclid")),
    ("signed_query_params", "sig,expires", '["sig", "expires"]', frozenset({"sig", "expires"})),
    ("vary_accept_classes", "avif,webp", '"avif,webp"', ("avif", "webp")),
]


@pytest.mark.parametrize(("name", "text", "toml", "expected"), SETTINGS)
def test_each_setting_from_flag_environment_and_toml(
    base: dict[str, str], tmp_path: Path, name: str, text: str, toml: str, expected: Any
) -> None:
    from_flag = build_config({**base, name: text}, environ={})
    from_env = build_config(base, environ={"PIXCACHE_" + name.upper(): text})
    file = tmp_path / "pixcache.toml"
    file.write_text(f"{name.replace('_', '-')} = {toml}\n", encoding="utf-8")
    from_toml = build_config({**base, "config": str(file)}, environ={})
    for config in (from_flag, from_env, from_toml):
        assert getattr(config, name) == expected


def test_the_flags_exist() -> None:
    args = parser().parse_args(
        [
            "serve",
            "--sort-query-params=true",
            "--drop-query-params=utm_*",
            "--signed-query-params=sig",
            "--vary-accept-classes=avif",
        ]
    )
    assert args.drop_query_params == "utm_*" and args.vary_accept_classes == "avif"


@pytest.mark.parametrize(
    ("flags", "setting", "words"),
    [
        ({"sort_query_params": "maybe"}, "sort_query_params", "true or false"),
        ({"drop_query_params": "utm_*&x"}, "drop_query_params", "may not hold"),
        ({"signed_query_params": "sig*"}, "signed_query_params", "literal names"),
        ({"vary_accept_classes": "avif,png"}, "vary_accept_classes", "'png'"),
        ({"vary_accept_classes": "webp,webp"}, "vary_accept_classes", "twice"),
        # A drop pattern that would remove a signed parameter: refused at start.
        (
            {"drop_query_params": "utm_*,s*", "signed_query_params": "sig"},
            "drop_query_params",
            "'sig'",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_setting(
    base: dict[str, str], flags: dict[str, str], setting: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({**base, **flags}, environ={})
    message = str(caught.value)
    assert caught.value.setting == setting
    assert "--" + setting.replace("_", "-") in message and words in message


def test_serve_refuses_dropping_a_signed_parameter(tmp_path: Path) -> None:
    """At start, before serving: exit status 2 and a message naming the flag and variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXCACHE_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--origin", "http://127.0.0.1:9"]
        + ["--cache-dir", str(tmp_path / "cache"), "--listen", "127.0.0.1:0"]
        + ["--drop-query-params", "utm_*,x-*", "--signed-query-params", "x-sig"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--drop-query-params (PIXCACHE_DROP_QUERY_PARAMS)" in result.stderr
    assert "'x-*' matches 'x-sig'" in result.stderr
    assert not (tmp_path / "cache").exists()
