"""compose.yaml cannot be started here (no container engine): check that its services, ports,
volumes, health checks and addresses are wired to each other consistently."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def depends_of(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def mounted_host_file(service: dict[str, Any], target_dir: str) -> Path:
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./") and target.startswith(target_dir):
            return REPO / source
    raise AssertionError(f"nothing from the repository mounted under {target_dir}")


def listen_port(service: dict[str, Any]) -> int:
    return int(env_of(service)["PIXCACHE_LISTEN"].rsplit(":", 1)[1])


def test_the_four_services_exist(services: dict[str, Any]) -> None:
    assert {"nginx", "pixcache", "imgproxy", "minio"} <= services.keys()
    assert services["nginx"]["image"].startswith("nginx:")
    assert services["imgproxy"]["image"].startswith("darthsim/imgproxy")
    assert services["minio"]["image"].startswith("minio/minio")
    assert services["pixcache"]["build"] == "."
    assert (REPO / "Dockerfile").is_file()


def test_every_depends_on_names_a_service_that_can_satisfy_it(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        for dep, condition in depends_of(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
            if condition == "service_completed_successfully":
                assert one_shot(services[dep]), f"{dep} must run once and exit"


def test_every_long_running_service_has_a_health_check(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if one_shot(service):
            continue
        check = service.get("healthcheck")
        assert check and check["test"] and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name


def test_pixcache_health_check_probes_its_http_port(services: dict[str, Any]) -> None:
    check = " ".join(services["pixcache"]["healthcheck"]["test"])
    assert f"'127.0.0.1', {listen_port(services['pixcache'])}" in check


def test_nginx_upstream_is_the_pixcache_service_on_its_listen_port(
    services: dict[str, Any],
) -> None:
    conf = mounted_host_file(services["nginx"], "/etc/nginx/conf.d/")
    text = conf.read_text()
    upstream = re.search(r"upstream\s+pixcache\s*\{(.*?)\}", text, re.S)
    assert upstream, f"{conf.name} has no `upstream pixcache`"
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream.group(1), re.M)
    assert servers == [("pixcache", str(listen_port(services["pixcache"])))]
    assert "proxy_pass http://pixcache;" in text
    # nginx listens on the container port that compose publishes.
    (listen,) = re.findall(r"^\s*listen\s+(\d+);", text, re.M)
    published = [str(p).rsplit(":", 1)[1] for p in services["nginx"]["ports"]]
    assert listen in published
    # The health check's URL is one the config answers itself.
    check = services["nginx"]["healthcheck"]["test"]
    path = urlsplit(check[-1]).path
    assert f"location = {path} " in text


def test_pixcache_cache_dir_is_a_declared_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    cache_dir = env_of(services["pixcache"])["PIXCACHE_CACHE_DIR"]
    named = {}
    for volume in services["pixcache"]["volumes"]:
        source, target = volume.split(":")[:2]
        named[target] = source
    assert cache_dir in named, "the cache dir must be on a volume"
    assert named[cache_dir] in (compose.get("volumes") or {}), "volume is not declared"
    for service in services.values():  # every named volume used is declared
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("./", "/")):
                assert source in compose["volumes"], source


def test_image_service_fetches_its_sources_through_pixcache(services: dict[str, Any]) -> None:
    env = env_of(services["imgproxy"])
    base = urlsplit(env["IMGPROXY_BASE_URL"])
    assert base.scheme == "http"
    assert base.hostname == "pixcache" and base.port == listen_port(services["pixcache"])
    assert env["IMGPROXY_ALLOWED_SOURCES"] == env["IMGPROXY_BASE_URL"]
    assert "pixcache" in depends_of(services["imgproxy"])


def test_pixcache_origin_is_the_minio_service(services: dict[str, Any]) -> None:
    pixcache = services["pixcache"]
    command = pixcache["command"]
    origin = command[command.index("--origin") + 1]
    assert origin.startswith("s3://images")
    endpoint = urlsplit(env_of(pixcache)["PIXCACHE_S3_ENDPOINT_URL"])
    assert endpoint.hostname == "minio" and endpoint.hostname in services
    minio_ports = {int(str(p).rsplit(":", 1)[1]) for p in services["minio"]["ports"]}
    assert endpoint.port in minio_ports
    assert "server" in services["minio"]["command"]
    # pixcache signs with MinIO's own credentials, and the bucket is made before it starts.
    assert env_of(pixcache)["AWS_ACCESS_KEY_ID"] == env_of(services["minio"])["MINIO_ROOT_USER"]
    assert "minio" in depends_of(pixcache)
    init = services.get("minio-init")
    if init is not None:
        assert "local/images" in " ".join(init["entrypoint"])


def test_published_ports_do_not_collide(services: dict[str, Any]) -> None:
    published: list[str] = []
    for service in services.values():
        for port in service.get("ports", []):
            parts = str(port).split(":")
            assert len(parts) >= 2, f"{port}: publish as HOST:CONTAINER"
            published.append(":".join(parts[:-1]))
    assert len(published) == len(set(published)), published


def test_nginx_x_accel_reads_the_bodies_pixcache_names(services: dict[str, Any]) -> None:
    """The X-Accel-Redirect front: its internal location is pixcache's prefix, and its alias
    is pixcache's cache dir, on the same volume, mounted read-only."""
    nginx, pixcache = services["nginx-x-accel"], services["pixcache"]
    text = mounted_host_file(nginx, "/etc/nginx/conf.d/").read_text()
    env = env_of(pixcache)
    prefix = env["PIXCACHE_X_ACCEL_REDIRECT"]
    location = re.search(rf"location {re.escape(prefix)} \{{(.*?)\n    \}}", text, re.S)
    assert location, f"no internal location for {prefix}"
    assert "internal;" in location.group(1)
    (alias,) = re.findall(r"^\s*alias\s+(\S+);", location.group(1), re.M)
    assert alias == env["PIXCACHE_CACHE_DIR"].rstrip("/") + "/bodies/"
    cache_volume = next(
        v for v in pixcache["volumes"] if v.split(":")[1] == env["PIXCACHE_CACHE_DIR"]
    )
    assert f"{cache_volume.split(':')[0]}:{env['PIXCACHE_CACHE_DIR']}:ro" in nginx["volumes"]
    upstream = re.search(r"upstream\s+pixcache\s*\{(.*?)\}", text, re.S)
    assert upstream and f"server pixcache:{listen_port(pixcache)}" in upstream.group(1)
    assert "pixcache" in depends_of(nginx)
