"""Request path -> S3 object key: under the prefix, or no key at all (a 404 without asking
S3); and the s3:// origin and S3 settings in the configuration."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import ConfigError, Origin, build_config
from proxy.origins.s3 import MAX_KEY_BYTES, object_key


@pytest.mark.parametrize(
    ("prefix", "path_qs", "key"),
    [
        ("pics", "/a.jpg", "pics/a.jpg"),
        ("pics", "/2024/05/a.jpg", "pics/2024/05/a.jpg"),
        ("", "/a.jpg", "a.jpg"),
        ("a/b", "/c.jpg", "a/b/c.jpg"),
        # The query is not part of the key.
        ("pics", "/a.jpg?w=100&h=50", "pics/a.jpg"),
        ("pics", "/a.jpg?", "pics/a.jpg"),
        # Percent-decoded, as UTF-8.
        ("pics", "/caf%C3%A9%20cr%C3%A8me.jpg", "pics/café crème.jpg"),
        ("pics", "/a%2Fb.jpg", "pics/a/b.jpg"),
        ("pics", "/a+b.jpg", "pics/a+b.jpg"),  # a path's + is a plus, not a space
        ("pics", "/a%3Fb.jpg", "pics/a?b.jpg"),
        ("pics", "/..a.jpg", "pics/..a.jpg"),  # only whole segments are special
        ("pics", "/a..", "pics/a.."),
    ],
)
def test_paths_that_name_a_key(prefix: str, path_qs: str, key: str) -> None:
    assert object_key(prefix, path_qs) == key


@pytest.mark.parametrize(
    "path_qs",
    [
        "/",
        "",
        "a.jpg",  # not origin-form
        "//a.jpg",
        "/a//b.jpg",
        "/dir/",
        "/../a.jpg",
        "/a/../../b.jpg",
        "/./a.jpg",
        "/a/.",
        "/%2e%2e/a.jpg",
        "/%2E%2E/a.jpg",
        "/a%2F..%2F..%2Fb.jpg",
        "/a%2F%2Fb.jpg",
        "/..?x=1",
        "/a\\..\\b.jpg",
        "/a%5C..%5Cb.jpg",
        "/%00a.jpg",
        "/a%0Ab.jpg",
        "/a%7F.jpg",
        "/%ff.jpg",  # not UTF-8
        "/%C3.jpg",  # a cut UTF-8 sequence
        "/" + "a" * (MAX_KEY_BYTES - len("pics/") + 1),
    ],
)
def test_paths_that_name_no_key(path_qs: str) -> None:
    assert object_key("pics", path_qs) is None


def test_longest_key() -> None:
    name = "a" * (MAX_KEY_BYTES - len("pics/"))
    assert object_key("pics", "/" + name) == "pics/" + name


@given(st.text(max_size=40), st.booleans())
def test_no_path_escapes_the_prefix(text: str, encode: bool) -> None:
    path = "/" + (quote(text, safe="") if encode else text)
    key = object_key("pics", path)
    if key is None:
        return
    assert key.startswith("pics/")
    segments = key.split("/")
    assert "" not in segments and "." not in segments and ".." not in segments
    assert "\\" not in key and "\0" not in key


# -- configuration ------------------------------------------------------------------------


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return {"cache_dir": str(tmp_path / "cache")}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s3://images", Origin("s3", "s3://images", bucket="images")),
        ("s3://images/", Origin("s3", "s3://images", bucket="images")),
        ("s3://images/pics", Origin("s3", "s3://images/pics", bucket="images", prefix="pics")),
        ("s3://images/a/b/", Origin("s3", "s3://images/a/b", bucket="images", prefix="a/b")),
        (
            "s3://my.bucket-1/x",
            Origin("s3", "s3://my.bucket-1/x", bucket="my.bucket-1", prefix="x"),
        ),
        ("s3://Legacy_Bucket", Origin("s3", "s3://Legacy_Bucket", bucket="Legacy_Bucket")),
    ],
)
def test_s3_origins(base: dict[str, str], value: str, expected: Origin) -> None:
    assert build_config({**base, "origin": value}, environ={}).origin == expected


@pytest.mark.parametrize(
    "value",
    [
        "s3://",
        "s3:///pics",
        "s3://user@images",
        "s3://images:9000",
        "s3://images/a//b",
        "s3://images/../b",
        "s3://images/a/./b",
        "s3://images/a?x=1",
        "s3://images/a#frag",
    ],
)
def test_invalid_s3_origins_are_refused(base: dict[str, str], value: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({**base, "origin": value}, environ={})
    assert info.value.setting == "origin"


def test_s3_defaults(base: dict[str, str]) -> None:
    config = build_config({**base, "origin": "s3://images"}, environ={})
    assert config.s3_endpoint_url is None and config.s3_region is None
    assert config.s3_addressing_style == "auto"
    assert config.s3_default_cache_control == "public, max-age=3600"
    assert config.s3_not_found_cache_control == ""


def test_s3_settings_from_flags_environment_and_file(base: dict[str, str], tmp_path: Path) -> None:
    toml = tmp_path / "pixcache.toml"
    toml.write_text(
        's3_region = "eu-west-1"\ns3-addressing-style = "virtual"\ns3_default_cache_control = ""\n',
        encoding="utf-8",
    )
    environ = {
        "PIXCACHE_S3_ENDPOINT_URL": "https://minio.test:9000/",
        "PIXCACHE_S3_REGION": "us-east-2",
    }
    flags = {**base, "origin": "s3://images", "config": str(toml)}
    flags["s3_not_found_cache_control"] = "max-age=60"
    config = build_config(flags, environ=environ)
    assert config.s3_endpoint_url == "https://minio.test:9000"
    assert config.s3_region == "us-east-2"  # the environment wins over the file
    assert config.s3_addressing_style == "virtual"
    assert config.s3_default_cache_control == ""  # the file turned the default off
    assert config.s3_not_found_cache_control == "max-age=60"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("s3_endpoint_url", "minio.test:9000"),
        ("s3_endpoint_url", "ftp://minio.test"),
        ("s3_endpoint_url", "http://"),
        ("s3_endpoint_url", "http://minio.test:port"),
        ("s3_endpoint_url", "http://minio.test/?x=1"),
        ("s3_region", "eu west 1"),
        ("s3_region", ""),
        ("s3_addressing_style", "dns"),
        ("s3_default_cache_control", "max-age=60\r\nX-Injected: 1"),
        ("s3_not_found_cache_control", "max-age=60\n"),
    ],
)
def test_invalid_s3_settings_name_the_setting(base: dict[str, str], name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({**base, "origin": "s3://images", name: value}, environ={})
    assert info.value.setting == name
    assert "--" + name.replace("_", "-") in str(info.value)
