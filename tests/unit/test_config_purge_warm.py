"""The purge-by-source and warm-up settings: defaults, each source, and errors that name them."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, build_config

BASE = {"origin": "http://127.0.0.1:9", "cache_dir": "/tmp/pixcache-test"}


def test_defaults() -> None:
    config = build_config(BASE, environ={})
    assert (config.source_grammar, config.warm_concurrency, config.warm_rate) == ("none", 4, 0.0)


def test_from_flags_and_environment() -> None:
    environ = {"PIXCACHE_SOURCE_GRAMMAR": "thumbor", "PIXCACHE_WARM_RATE": "2.5"}
    config = build_config({**BASE, "warm_concurrency": "8"}, environ=environ)
    assert (config.source_grammar, config.warm_concurrency, config.warm_rate) == (
        "thumbor",
        8,
        2.5,
    )


@pytest.mark.parametrize(
    ("name", "value", "flag"),
    [
        ("source_grammar", "nginx", "--source-grammar"),
        ("warm_concurrency", "0", "--warm-concurrency"),
        ("warm_concurrency", "many", "--warm-concurrency"),
        ("warm_rate", "-1", "--warm-rate"),
        ("warm_rate", "fast", "--warm-rate"),
        ("warm_rate", "inf", "--warm-rate"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: str, flag: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({**BASE, name: value}, environ={})
    assert flag in str(caught.value) and caught.value.setting == name
