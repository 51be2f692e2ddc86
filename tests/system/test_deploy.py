"""deploy/kubernetes.yaml against pixcache's real settings: every PIXCACHE_* variable is
a setting and its value is valid, the probes ask for paths and ports pixcache serves
(checked on a real `pixcache serve` started from the manifest's environment), the token
comes from a Secret, and the shutdown and the limits add up."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.cli import parser
from proxy.config import SETTINGS, Config, build_config
from tests.system.procs import REPO, free_port, start_origin, start_pixcache, stop

MANIFEST = REPO / "deploy" / "kubernetes.yaml"
QUANTITY = re.compile(r"(\d+)(Ki|Mi|Gi|Ti)?")
BINARY = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def quantity(text: str) -> int:
    """A Kubernetes byte quantity such as 512Mi or 20Gi."""
    match = QUANTITY.fullmatch(str(text))
    assert match, f"not a byte quantity this test reads: {text!r}"
    return int(match[1]) * BINARY[match[2]]


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


@pytest.fixture(scope="module")
def pod(documents: list[dict[str, Any]]) -> dict[str, Any]:
    [workload] = [doc for doc in documents if doc["kind"] in ("StatefulSet", "Deployment")]
    return workload["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    [only] = pod["containers"]
    return only


def environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal variables; a Secret's stands in as a valid token."""
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            assert "secretKeyRef" in var["valueFrom"], var
            env[var["name"]] = "s" * 32
    return env


@pytest.fixture(scope="module")
def config(container: dict[str, Any]) -> Config:
    """What pixcache builds from the manifest: flags in args (if any) over the variables."""
    args = parser().parse_args(["serve", *container.get("args", [])])
    flags = {k: v for k, v in vars(args).items() if v is not None and k != "command"}
    return build_config(flags, environ=environment(container))


def port_of(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


def test_every_variable_is_a_pixcache_setting(container: dict[str, Any]) -> None:
    for name in environment(container):
        assert name.startswith("PIXCACHE_"), name
        assert name.removeprefix("PIXCACHE_").lower() in SETTINGS, f"{name} is no setting"


def test_the_admin_token_comes_from_a_secret(container: dict[str, Any], config: Config) -> None:
    [token] = [var for var in container["env"] if var["name"] == "PIXCACHE_ADMIN_TOKEN"]
    assert "value" not in token and token["valueFrom"]["secretKeyRef"]["name"]
    assert config.admin_token is not None and config.admin_host == "0.0.0.0"


def test_probes_ask_for_what_pixcache_serves(container: dict[str, Any], config: Config) -> None:
    assert config.liveness_path and config.readiness_path
    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == config.liveness_path
    assert probes["startupProbe"]["path"] == config.liveness_path
    assert probes["readinessProbe"]["path"] == config.readiness_path
    for probe in probes.values():
        assert port_of(container, probe["port"]) == config.port
        assert "httpHeaders" not in probe  # no token: the kubelet has none
    assert {p["containerPort"] for p in container["ports"]} == {config.port, config.admin_port}


def test_the_cache_lives_on_the_claimed_volume(
    documents: list[dict[str, Any]], container: dict[str, Any], config: Config
) -> None:
    [workload] = [doc for doc in documents if doc["kind"] == "StatefulSet"]
    claims = {c["metadata"]["name"]: c for c in workload["spec"]["volumeClaimTemplates"]}
    [mount] = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == config.cache_dir]
    claim = claims[mount["name"]]
    storage = quantity(claim["spec"]["resources"]["requests"]["storage"])
    assert config.max_size is not None and config.max_size + config.min_free <= storage


def test_shutdown_fits_in_the_grace_period(
    pod: dict[str, Any], container: dict[str, Any], config: Config
) -> None:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = float(command[1])
    assert config.shutdown_delay > 0
    readiness = container["readinessProbe"]
    # The kubelet sees the 503 within one probe period, well inside the delay.
    assert readiness["periodSeconds"] * readiness.get("failureThreshold", 3) < (
        config.shutdown_delay
    )
    needed = pause + config.shutdown_delay + config.shutdown_grace
    assert pod["terminationGracePeriodSeconds"] > needed


def test_limits_add_up(pod: dict[str, Any], container: dict[str, Any], config: Config) -> None:
    memory = quantity(container["resources"]["limits"]["memory"])
    assert config.max_rss is not None and config.max_rss * config.workers < memory
    assert quantity(container["resources"]["requests"]["memory"]) <= memory
    # The user the image runs as, which owns the cache directory in the image.
    dockerfile = (REPO / "Dockerfile").read_text()
    uid = re.search(r"useradd .*--uid (\d+)", dockerfile)
    assert uid and pod["securityContext"]["runAsUser"] == int(uid[1])
    assert pod["securityContext"]["fsGroup"] == int(uid[1])


def test_a_real_pixcache_from_the_manifest_answers_its_probes(
    tmp_path: Path, container: dict[str, Any], config: Config
) -> None:
    """The manifest's own environment, but on loopback and with a local origin and cache."""
    origin, origin_url = start_origin({"/a.jpg": (100, 1)})
    port, admin_port = free_port(), free_port()
    # The flags start_pixcache gives win over the manifest's variables of the same names.
    admin = ("--admin-listen", f"127.0.0.1:{admin_port}")
    proc = start_pixcache(origin_url, tmp_path / "cache", port, *admin, env=environment(container))
    try:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container[kind]["httpGet"]["path"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:  # the admin listener is not
            urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10)
        assert refused.value.code == 401
    finally:
        stop(proc)
        stop(origin)
