"""Real processes for system tests: the fake origin and `pixcache serve`."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.zygote import ZygoteProcess, start_python

REPO = Path(__file__).resolve().parents[2]
# What start_* return, and what tests start with subprocess.Popen themselves.
Process = subprocess.Popen | ZygoteProcess


def free_port(*other: int) -> int:
    """A free loopback port for a process to bind later, none of `other`. It is chosen below
    the kernel's ephemeral range: a port from that range (what a bind to port 0 gives) is
    also handed to every outgoing connection on the machine, and under load one is often
    taken between being found here and being bound; below it, only a program that names the
    port can take it."""
    low = _EPHEMERAL_LOW
    for _ in range(1000):
        port = random.randrange(min(10000, low - 1000), low)
        if port in other:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_EPHEMERAL_LOW = _ephemeral_low()


def wait_for_port(port: int, proc: Process, timeout: float = 20) -> None:
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
) -> tuple[ZygoteProcess, str]:
    """The fake origin in its own process, serving pattern_bytes(size, seed) per path."""
    args = ["tests.fake_origin", "--port", "0", "--delay", str(delay)]
    args += ["--chunk-interval", str(chunk_interval)]
    for path, (size, seed) in objects.items():
        args += ["--gen", f"{path}={size}:{seed}"]
    proc = start_python(args, cwd=REPO, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"fake origin did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def start_pixcache(
    origin: str,
    cache_dir: Path,
    port: int,
    *extra: str,
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> ZygoteProcess:
    """`pixcache serve` in its own process group; JSON log lines go to `log` if given;
    `env` adds PIXCACHE_* variables (the flags given here win over them)."""
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = start_python(
        [
            "proxy",
            "serve",
            "--origin",
            origin,
            "--listen",
            f"127.0.0.1:{port}",
            "--cache-dir",
            str(cache_dir),
            "--log-level",
            "info" if log is not None else "warning",
            # Each instance its own admin port, so that several can run side by side.
            "--admin-listen",
            f"127.0.0.1:{free_port()}",
            *extra,
        ],
        cwd=REPO,
        stdout=out,
        start_new_session=True,
        env=None if env is None else os.environ | env,
    )
    if log is not None:
        out.close()
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop(proc, signal.SIGKILL)  # one that never listened must not outlive the test
        raise
    return proc


def stop(proc: Process, sig: int = signal.SIGTERM) -> None:
    """Stop `proc` with `sig` and wait for it; SIGKILL goes to its whole process group (a
    master and its workers), and returns once every process of the group is dead: the
    descriptors and locks of a killed worker are let go only then, not when its master is."""
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
    if sig == signal.SIGKILL:
        deadline = time.monotonic() + 10
        while _alive_in_group(proc.pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"process group {proc.pid} still runs 10 s after SIGKILL")
            time.sleep(0.01)


def _alive_in_group(group: int) -> bool:
    """Whether a process of process group `group` still runs. Every thread counts: a
    process's descriptors (and the locks they hold) are let go when its last thread exits,
    which can be after its first thread shows as a zombie."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            tasks = [
                Path(task.path, "stat").read_text() for task in os.scandir(f"{entry.path}/task")
            ]
        except OSError:
            continue  # gone meanwhile
        for stat in tasks:
            # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
            state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
            if int(pgrp) == group and state not in ("Z", "X"):
                return True
    return False


def children_of(pid: int) -> list[int]:
    """The child processes of `pid` (the workers of a pixcache master)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def wait_for_children(
    pid: int, count: int, timeout: float = 20, *, replacing: list[int] = ()
) -> list[int]:
    """Wait until `pid` has `count` children, none of them in `replacing` (killed ones
    linger as zombies until the master reaps them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children_of(pid)
        if len(kids) == count and not set(kids) & set(replacing):
            return kids
        time.sleep(0.05)
    raise TimeoutError(f"{pid} does not have {count} children")
