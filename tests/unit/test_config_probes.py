"""The probe and drain settings: --liveness-path, --readiness-path, --shutdown-delay
(flags, PIXCACHE_* variables and TOML keys), validated like every other setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import parser
from proxy.config import ConfigError, build_config

ORIGIN = "http://origin.test:8081"


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return {"origin": ORIGIN, "cache_dir": str(tmp_path / "cache")}


def test_off_by_default(base: dict[str, str]) -> None:
    config = build_config(base, environ={})
    assert (config.liveness_path, config.readiness_path, config.shutdown_delay) == (
        None,
        None,
        0.0,
    )


def test_from_flags_environment_and_toml(base: dict[str, str], tmp_path: Path) -> None:
    args = parser().parse_args(
        ["serve", "--liveness-path", "/_pixcache/health", "--shutdown-delay", "15"]
    )
    flags = {k: v for k, v in vars(args).items() if v is not None} | base
    config = build_config(flags, environ={"PIXCACHE_READINESS_PATH": "/_pixcache/ready"})
    assert config.liveness_path == "/_pixcache/health"
    assert config.readiness_path == "/_pixcache/ready"
    assert config.shutdown_delay == 15.0

    toml = tmp_path / "pixcache.toml"
    toml.write_text('readiness-path = "/ready"\nshutdown_delay = 2.5\n')
    config = build_config(base | {"config": str(toml)}, environ={})
    assert (config.readiness_path, config.shutdown_delay) == ("/ready", 2.5)


@pytest.mark.parametrize(
    "bad",
    [
        "health",  # not a path
        "/",  # the origin's root
        "/a//b",  # empty segment
        "/a/../b",  # dot segment
        "/a/./b",
        "/_pixcache/%68ealth",  # one path however decoded: no escapes
        "/a?b",  # no query
        "/a#b",
        "/a b",
        "",
    ],
)
@pytest.mark.parametrize("name", ["liveness_path", "readiness_path"])
def test_a_bad_probe_path_is_refused_by_name(base: dict[str, str], name: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=f"--{name.replace('_', '-')}") as caught:
        build_config(base | {name: bad}, environ={})
    assert caught.value.setting == name


def test_the_two_probes_need_two_paths(base: dict[str, str]) -> None:
    same = {"liveness_path": "/_pixcache/probe", "readiness_path": "/_pixcache/probe"}
    with pytest.raises(ConfigError, match="--readiness-path.*must differ from --liveness-path"):
        build_config(base | same, environ={})


@pytest.mark.parametrize("bad", ["-1", "soon", "nan", "inf", True])
def test_a_bad_shutdown_delay_is_refused_by_name(base: dict[str, str], bad: object) -> None:
    with pytest.raises(ConfigError, match="--shutdown-delay") as caught:
        build_config(base | {"shutdown_delay": bad}, environ={})
    assert caught.value.setting == "shutdown_delay"
