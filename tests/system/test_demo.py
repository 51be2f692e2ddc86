"""`pixcache demo` as a new user runs it: real processes, ports another program holds, the
environment, signals. What the user sees: the URLs it prints work, a taken port it was told
to use is refused with an exit code and the setting's name, and no temp directory is left."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.commits import settled
from tests.system.procs import REPO, free_port, stop

SAMPLES = REPO / "proxy" / "samples"
SERVING = re.compile(r"^pixcache demo: serving http://127\.0\.0\.1:(\d+)/", re.M)
ADMIN = re.compile(r"admin listener on 127\.0\.0\.1:(\d+);")
# The ports `pixcache serve` listens on by default, which a newcomer often has in use.
DEFAULT_PORTS = (8080, 8081)


@contextmanager
def holding(port: int) -> Iterator[None]:
    """A listener of ours on 127.0.0.1:port. If another program holds the port already,
    it is taken all the same, which is what the test needs."""
    sock = socket.socket()
    try:
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        yield
    finally:
        sock.close()


def start_demo(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen, Path, Path]:
    """`pixcache demo` with its own TMPDIR (to see what it leaves there), stdout in a file."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    out = tmp_path / "demo.out"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PIXCACHE_")}
    environ |= {"TMPDIR": str(tmpdir), **env}
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "demo", *args],
            cwd=REPO,
            env=environ,
            stdout=sink,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    return proc, tmpdir, out


def wait_for_announcement(proc: subprocess.Popen, out: Path, timeout: float = 30) -> str:
    """The demo's output once it has said where it serves (or failed if it exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = out.read_text()
        if SERVING.search(text) and "curl" in text.rsplit("pixcache demo: serving", 1)[1]:
            return text
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"demo exited {proc.returncode}: {stderr}\n{text}")
        time.sleep(0.05)
    raise AssertionError(f"demo did not announce within {timeout}s:\n{out.read_text()}")


def get(url: str) -> tuple[int, bytes, str]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, resp.read(), resp.headers.get("Cache-Status", "")


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        stop(proc, signal.SIGKILL)
        raise
    return proc.returncode, stderr.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_demo_serves_with_the_default_ports_taken_and_leaves_no_temp_dir(
    tmp_path: Path, sig: signal.Signals
) -> None:
    with ExitStack() as held:
        for port in DEFAULT_PORTS:
            held.enter_context(holding(port))
        proc, tmpdir, out = start_demo(tmp_path)
        try:
            text = wait_for_announcement(proc, out)
            port = int(SERVING.search(text).group(1))
            admin = ADMIN.search(text)
            assert admin, text
            assert port not in DEFAULT_PORTS and int(admin.group(1)) not in DEFAULT_PORTS
            expected = (SAMPLES / "gradient.jpg").read_bytes()
            # Every URL it prints answers, and the sample is served through the cache.
            for sample in sorted(SAMPLES.iterdir()):
                assert f"curl -sI http://127.0.0.1:{port}/{sample.name}" in text
            status, body, cache_status = get(f"http://127.0.0.1:{port}/gradient.jpg")
            assert (status, body) == (200, expected)
            assert "fwd=uri-miss" in cache_status and "stored" in cache_status
            (cache_dir,) = tmpdir.iterdir()
            assert cache_dir.name.startswith("pixcache-demo-") and str(cache_dir) in text
            asyncio.run(settled(cache_dir, entry=True))
            status, body, cache_status = get(f"http://127.0.0.1:{port}/gradient.jpg")
            assert (status, body) == (200, expected)
            assert cache_status.startswith("pixcache; hit"), cache_status
        finally:
            proc.send_signal(sig)
        returncode, stderr = finish(proc)
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    assert list(tmpdir.iterdir()) == []


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_demo_refuses_a_taken_admin_port_it_was_given_naming_the_setting(
    tmp_path: Path, how: str
) -> None:
    port = free_port()
    with holding(port):
        if how == "flag":
            proc, tmpdir, out = start_demo(tmp_path, "--admin-listen", f"127.0.0.1:{port}")
        else:
            proc, tmpdir, out = start_demo(tmp_path, PIXCACHE_ADMIN_LISTEN=f"127.0.0.1:{port}")
        returncode, stderr = finish(proc)
    assert returncode == 2
    assert "--admin-listen" in stderr and "PIXCACHE_ADMIN_LISTEN" in stderr
    assert f"127.0.0.1:{port}" in stderr
    assert "Traceback" not in stderr
    # It never claimed to serve, and cleaned up after itself.
    assert "pixcache demo: serving" not in out.read_text()
    assert list(tmpdir.iterdir()) == []


def test_demo_refuses_a_taken_port_it_was_given_naming_the_setting(tmp_path: Path) -> None:
    port = free_port()
    with holding(port):
        proc, tmpdir, out = start_demo(tmp_path, "--listen", f"127.0.0.1:{port}")
        returncode, stderr = finish(proc)
    assert returncode == 2
    assert "--listen" in stderr and "PIXCACHE_LISTEN" in stderr
    assert "Traceback" not in stderr
    assert "pixcache demo: serving" not in out.read_text()
    assert list(tmpdir.iterdir()) == []


def test_demo_listens_where_the_environment_says(tmp_path: Path) -> None:
    port = free_port()
    admin_port = free_port(port)
    proc, tmpdir, out = start_demo(
        tmp_path,
        PIXCACHE_LISTEN=f"127.0.0.1:{port}",
        PIXCACHE_ADMIN_LISTEN=f"127.0.0.1:{admin_port}",
    )
    try:
        text = wait_for_announcement(proc, out)
        assert int(SERVING.search(text).group(1)) == port
        assert int(ADMIN.search(text).group(1)) == admin_port
        status, body, _ = get(f"http://127.0.0.1:{port}/gradient.png")
        assert (status, body) == (200, (SAMPLES / "gradient.png").read_bytes())
        # The admin listener is the demo's: its health answers on the port given.
        status, _, _ = get(f"http://127.0.0.1:{admin_port}/healthz")
        assert status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
    returncode, stderr = finish(proc)
    assert returncode == 0, stderr
    assert list(tmpdir.iterdir()) == []


def test_a_flag_wins_over_the_environment(tmp_path: Path) -> None:
    port = free_port()
    env_port = free_port(port)
    proc, tmpdir, out = start_demo(
        tmp_path, "--listen", f"127.0.0.1:{port}", PIXCACHE_LISTEN=f"127.0.0.1:{env_port}"
    )
    try:
        text = wait_for_announcement(proc, out)
        assert int(SERVING.search(text).group(1)) == port
    finally:
        proc.send_signal(signal.SIGTERM)
    returncode, stderr = finish(proc)
    assert returncode == 0, stderr
    assert list(tmpdir.iterdir()) == []
