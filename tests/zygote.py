"""Python processes for tests, forked from one that has already imported pixcache.

Starting `python -m proxy serve` costs about 0.3 s of CPU in imports (aiohttp, and the
system CA bundle it loads twice at import), and the system tests start a hundred of them
and dozens of fake origins: a fifth of the suite's CPU on a 2-core machine. Each test
process (pytest worker) keeps one zygote: a single-threaded Python that imported what
every such process imports before reading its configuration, and forks one child per
start. The child becomes what `python -m MODULE ARGS...` would have been: its own
standard streams, working directory, environment and session; every other descriptor
closed; the module run as __main__, and the interpreter's normal exit after it.

What the zygote imports is read at import from nothing a test sets (prometheus-client,
which reads its multiprocess directory from the environment at import, is left out, as
pixcache itself imports it only once configured). What a child takes from the zygote's start
rather than its own: the interpreter's PYTHON* options, aiohttp's default SSL contexts
(SSL_CERT_FILE), the umask and resource limits, sys.orig_argv; tests that set any of these
start a fresh interpreter themselves. The child is not the test process's
child, so its exit status travels from the zygote, and `ZygoteProcess` answers as much of
subprocess.Popen as the tests use."""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

MESSAGE = 1 << 20  # an environment and an argument list, in one datagram
# Not the modules the children run as __main__ themselves (runpy would warn, and run them
# twice): what they import.
PRELOAD = ("aiohttp", "aiohttp.web", "multidict", "uvloop", "structlog", "proxy.cli")


class ZygoteProcess:
    """A started process, as subprocess.Popen presents one."""

    def __init__(
        self,
        zygote: _Zygote,
        pid: int,
        args: list[str],
        stdout: IO[str] | None,
        stderr: IO[str] | None,
    ) -> None:
        self._zygote = zygote
        self.pid = pid
        self.args = args
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.exit_code(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._zygote.exit_code(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # as Popen: never a signal to a reaped (reusable) pid
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Zygote:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._proc = subprocess.Popen(
            # As a script: the package `tests` stays unimported, as in a fresh interpreter.
            [sys.executable, str(Path(__file__).resolve()), str(theirs.fileno())],
            cwd=Path(__file__).resolve().parents[1],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._sock = ours
        self.owner = os.getpid()  # a forked test process needs a zygote of its own
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}
        ready = self._receive(60)
        if ready != {"ready": True}:
            raise RuntimeError(f"the zygote did not start: {ready}")
        atexit.register(self.close)

    def start(
        self,
        module_args: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        stdout: int | IO[Any] | None,
        stderr: int | IO[Any] | None,
        start_new_session: bool,
    ) -> ZygoteProcess:
        stdin = os.open(os.devnull, os.O_RDONLY)
        opened = [stdin]
        readers: list[IO[str] | None] = []
        streams = [stdin]
        for target, wanted in ((1, stdout), (2, stderr)):
            reader = None
            if wanted == subprocess.PIPE:
                read_end, fd = os.pipe()
                reader = os.fdopen(read_end, "r")
                opened.append(fd)
            elif wanted == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_WRONLY)
                opened.append(fd)
            elif wanted is None:
                fd = target  # the test process's own, as Popen's child inherits it
            else:
                fd = wanted.fileno()  # type: ignore[union-attr]
            streams.append(fd)
            readers.append(reader)
        job = {
            "args": module_args,
            "cwd": str(cwd),
            "env": env,
            "new_session": start_new_session,
        }
        try:
            with self._lock:
                socket.send_fds(self._sock, [json.dumps(job).encode()], streams)
                reply = self._receive_reply()
                # A pid is used again once its process was reaped: the exit of an earlier
                # process of this pid is not this one's (none of its own can be in yet).
                self._exits.pop(reply.get("pid", 0), None)
        except BaseException:
            for reader in readers:
                if reader is not None:
                    reader.close()
            raise
        finally:
            for fd in opened:
                os.close(fd)
        if "pid" not in reply:
            raise RuntimeError(f"the zygote could not start {module_args}: {reply}")
        args = [sys.executable, "-m", *module_args]
        return ZygoteProcess(self, reply["pid"], args, *readers)

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """The exit code of `pid` (negative: the signal that ended it), once it ended
        within `timeout` seconds (None: however long it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while pid not in self._exits:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                message = self._receive(left)
                if message is None:
                    return None
                self._note(message)
            return os.waitstatus_to_exitcode(self._exits.pop(pid))  # kept by the caller

    def _receive_reply(self) -> dict[str, Any]:
        while True:
            message = self._receive(60)
            if message is None:
                raise RuntimeError("the zygote did not answer")
            if "exit" not in message:
                return message
            self._note(message)

    def _note(self, message: dict[str, Any]) -> None:
        self._exits[message["exit"]] = message["status"]

    def _receive(self, timeout: float | None) -> dict[str, Any] | None:
        """The next message, or None when none came within `timeout` (0: none waiting)."""
        self._sock.settimeout(timeout)  # 0: non-blocking
        try:
            data = self._sock.recv(MESSAGE)
        except (TimeoutError, BlockingIOError):
            return None
        if not data:
            raise RuntimeError("the zygote exited")
        return json.loads(data)

    def close(self) -> None:
        self._sock.close()  # the zygote ends once it reads the end of this socket
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def start_python(
    module_args: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    start_new_session: bool = False,
) -> ZygoteProcess:
    """What subprocess.Popen([sys.executable, "-m", *module_args], ...) would start, with
    the test process's environment when `env` is None. With PIXCACHE_TESTS_EXEC=1 in the
    environment it is that: a fresh interpreter for every process."""
    if os.environ.get("PIXCACHE_TESTS_EXEC") == "1":
        return subprocess.Popen(  # type: ignore[return-value]
            [sys.executable, "-m", *module_args],
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=start_new_session,
        )
    global _zygote
    with _zygote_lock:
        if _zygote is None or _zygote.owner != os.getpid():
            _zygote = _Zygote()
    return _zygote.start(
        module_args,
        cwd=cwd,
        env=dict(os.environ if env is None else env),
        stdout=stdout,
        stderr=stderr,
        start_new_session=start_new_session,
    )


def run_python(
    module_args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """What subprocess.run([sys.executable, "-m", *module_args], capture_output=True,
    text=True, timeout=timeout) returns; past `timeout` the process is killed and
    subprocess.TimeoutExpired raised, as there."""
    pipe = subprocess.PIPE
    proc = start_python(module_args, cwd=cwd, env=env, stdout=pipe, stderr=pipe)
    deadline = time.monotonic() + timeout
    streams = {proc.stdout: [], proc.stderr: []}
    try:
        with selectors.DefaultSelector() as selector:
            for stream in streams:
                selector.register(stream, selectors.EVENT_READ)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    proc.kill()
                    proc.wait()
                    raise subprocess.TimeoutExpired(proc.args, timeout)
                for key, _ in selector.select(left):
                    data = os.read(key.fd, 65536)
                    if data:
                        streams[key.fileobj].append(data)
                    else:
                        selector.unregister(key.fileobj)
    finally:
        for stream in streams:
            stream.close()  # type: ignore[union-attr]
    code = proc.wait(max(0.0, deadline - time.monotonic()) + 10)
    # As text=True reads them: the locale's encoding, universal newlines.
    out, err = (io.TextIOWrapper(io.BytesIO(b"".join(c))).read() for c in streams.values())
    return subprocess.CompletedProcess(proc.args, code, out, err)


# -- the zygote itself -------------------------------------------------------------------
def _serve(sock: socket.socket) -> dict[str, Any] | None:
    """Fork a child per request; report exits. Returns the job in a child, None at the end."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    os.set_blocking(wake_read, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    # Forking is safe only while no other thread can hold a lock the child would need.
    single = len(os.listdir("/proc/self/task")) == 1
    sock.send(json.dumps({"ready": single} if single else {"threads": "more than one"}).encode())
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                data, fds, _flags, _addr = socket.recv_fds(sock, MESSAGE, 3)
                if not data:
                    return None
                job = json.loads(data)
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    sock.close()  # its object must not close a reused descriptor later
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    job["fds"] = fds
                    return job
                for fd in fds:
                    os.close(fd)
                sock.send(json.dumps({"pid": pid}).encode())
            else:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_read, 512):
                        pass
            _reap(sock)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        sock.send(json.dumps({"exit": pid, "status": status}).encode())


def _become(job: dict[str, Any]) -> None:
    """Turn this forked child into `python -m ARGS...` (then the interpreter exits as that
    would: atexit handlers, threads joined, streams flushed)."""
    if job["new_session"]:
        os.setsid()
    for target, fd in enumerate(job["fds"]):
        os.dup2(fd, target)
    keep = set(range(3))
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            try:
                os.close(int(name))
            except OSError:
                pass
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    # Where `python -m` looks for modules: the working directory, then PYTHONPATH.
    extra = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[0:1] = [os.getcwd(), *(p for p in extra if p not in sys.path)]
    module, *args = job["args"]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    control = socket.socket(fileno=int(sys.argv[1]))
    for name in PRELOAD:
        __import__(name)
    import gc

    gc.freeze()  # what every child shares with the zygote stays unwritten
    job = _serve(control)
    if job is not None:
        _become(job)
