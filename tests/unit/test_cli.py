"""The installed `pixcache serve` refuses a bad configuration before serving: exit status 2,
and stderr names the flag (and its variable)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def installed_script() -> Path:
    """The console script `pip install -e .` installed: beside the interpreter running the
    tests (a venv's bin/, even when that is not on PATH), else the one on PATH. Without one
    the install is broken, and these tests fail saying so rather than skip."""
    beside = Path(sys.executable).parent / "pixcache"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("pixcache")
    if found is None:
        pytest.fail(f"no pixcache script beside {sys.executable} or on PATH: pip install -e .")
    return Path(found)


def run_serve(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # A clean environment: no PIXCACHE_* variable of the caller leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXCACHE_")}
    env["HOME"] = str(tmp_path)
    return subprocess.run(
        [str(installed_script()), "serve", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_non_numeric_connect_timeout_exits_2(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = run_serve(
        "--origin",
        "http://127.0.0.1:9",
        "--cache-dir",
        str(cache),
        "--connect-timeout",
        "abc",
        tmp_path=tmp_path,
    )
    assert result.returncode == 2
    assert "--connect-timeout" in result.stderr
    assert "PIXCACHE_CONNECT_TIMEOUT" in result.stderr
    assert "Traceback" not in result.stderr
    # Refused before anything was created.
    assert not cache.exists()


def test_unwritable_cache_dir_exits_2(tmp_path: Path) -> None:
    regular = tmp_path / "a-file"
    regular.write_bytes(b"x")
    result = run_serve(
        "--origin",
        "http://127.0.0.1:9",
        "--cache-dir",
        str(regular / "cache"),
        tmp_path=tmp_path,
    )
    assert result.returncode == 2
    assert "--cache-dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert regular.read_bytes() == b"x"


def test_missing_origin_exits_2(tmp_path: Path) -> None:
    result = run_serve("--cache-dir", str(tmp_path / "cache"), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "--origin" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_taken_admin_port_exits_2_naming_the_setting(tmp_path: Path, workers: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        admin = f"127.0.0.1:{held.getsockname()[1]}"
        with socket.socket() as spare:
            spare.bind(("127.0.0.1", 0))
            listen = f"127.0.0.1:{spare.getsockname()[1]}"
        result = run_serve(
            "--origin",
            "http://127.0.0.1:9",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--listen",
            listen,
            "--admin-listen",
            admin,
            "--workers",
            workers,
            tmp_path=tmp_path,
        )
    assert result.returncode == 2
    assert "--admin-listen" in result.stderr and "PIXCACHE_ADMIN_LISTEN" in result.stderr
    assert admin in result.stderr
    assert "Traceback" not in result.stderr
