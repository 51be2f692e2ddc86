"""The directory prometheus-client's multiprocess mode shares among the workers of one
master, and the removal of those whose master died without removing its own.

A master holds an exclusive flock(2) on a file in its directory for as long as it or any
of its workers lives (they inherit the descriptor). A directory whose lock can be taken
has no living owner: a master killed with SIGKILL (the OOM killer, a hard stop) left it,
and the next start removes it. Locks, unlike pids, mean the same in every PID namespace:
containers that share a temp directory never take each other's."""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "pixcache-metrics-"
OWNER = ".owner"  # the locked file (prometheus-client reads only its *.db files)
_held: list[int] = []  # the owner descriptors, open for the life of the process


def make() -> str:
    """A new directory for this master's metrics, locked as its own, removed at exit."""
    remove_abandoned()
    directory = tempfile.mkdtemp(prefix=PREFIX)
    fd = os.open(os.path.join(directory, OWNER), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held, through `fd`, until this process tree ends
    _held.append(fd)
    pid = os.getpid()
    atexit.register(lambda: os.getpid() == pid and shutil.rmtree(directory, ignore_errors=True))
    return directory


def remove_abandoned() -> None:
    """Remove this user's metrics directories that no living master holds."""
    for directory in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            if directory.is_symlink() or directory.stat().st_uid != os.getuid():
                continue  # not ours to judge
            fd = os.open(directory / OWNER, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # not a directory, or no owner file: being made, or not one of ours
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its owner lives
        finally:
            os.close(fd)
        shutil.rmtree(directory, ignore_errors=True)
