"""Real processes for system tests: the fake origin and `pixcache serve`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def start_origin(
    objects: dict[str, tuple[int, int]], delay: float = 0.0, chunk_interval: float = 0.0
) -> tuple[subprocess.Popen, str]:
    """The fake origin in its own process, serving pattern_bytes(size, seed) per path."""
    args = [sys.executable, "-m", "tests.fake_origin", "--port", "0", "--delay", str(delay)]
    args += ["--chunk-interval", str(chunk_interval)]
    for path, (size, seed) in objects.items():
        args += ["--gen", f"{path}={size}:{seed}"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"fake origin did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def start_pixcache(origin: str, cache_dir: Path, port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--origin",
            origin,
            "--listen",
            f"127.0.0.1:{port}",
            "--cache-dir",
            str(cache_dir),
            "--log-level",
            "warning",
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_port(port, proc)
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
