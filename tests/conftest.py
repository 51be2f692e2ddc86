"""What the whole test run shares: where it keeps its files, and its bytecode caches.

Files: the store fsyncs every entry it commits, and a run commits thousands. On a virtual
disk each fsync can wait for the host, which made the same run take from two to more than
twenty minutes here. Where /dev/shm is a tmpfs with room, the run's temporary files
(pytest's tmp_path and the tempfile module's, in this process and the ones it starts) live
there. No test depends on data outliving the machine: the crash tests kill processes, and
what a killed process wrote stays in the page cache on any filesystem.

Bytecode: a run starts a few hundred Python processes (pytest's workers, and the pixcache
instances, fake origins and commands the tests start). Where the environment sets
PYTHONDONTWRITEBYTECODE, each of them compiled every module it imports from source at every
start (a third of the CPU of starting pixcache, and most of collecting the tests), so the
run keeps bytecode caches (in __pycache__, which git ignores).

Garbage collection: what collecting the tests made (modules, test items, fixtures,
strategies) lives for the whole run, and a full collection walked all of it every few
tests: 17 of the 38 s of CPU the unit tests took in one process. Once the tests are
collected, it is moved out of the collector's reach (gc.freeze)."""

import gc
import os
import sys
import tempfile
from pathlib import Path

MEMORY_TEMP = Path("/dev/shm")
MEMORY_TEMP_MIN_FREE = 4 << 30


def _memory_temp_dir() -> Path | None:
    """A directory of this run's user on a tmpfs with room, if there is one."""
    try:
        stat = os.statvfs(MEMORY_TEMP)
        if stat.f_bavail * stat.f_frsize < MEMORY_TEMP_MIN_FREE:
            return None
        path = MEMORY_TEMP / f"pixcache-tests-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        if path.stat().st_uid != os.getuid():  # somebody else's: not ours to use
            return None
        return path
    except OSError:
        return None


if "TMPDIR" not in os.environ and (_memory := _memory_temp_dir()) is not None:
    os.environ["TMPDIR"] = tempfile.tempdir = str(_memory)

sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def pytest_collection_finish() -> None:
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items: list) -> None:
    """Tests marked `long` (each takes a good part of a minute) run first: pytest-xdist
    hands each worker a run of the list, and one of them started late ran alone for its
    last half minute after every other test had ended."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
