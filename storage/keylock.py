"""A lock per cache key, shared by every worker process, that dies with its holder.

Open-file-description locks (F_OFD_SETLK, Linux) on one byte of a shared lock file: the
lock belongs to the descriptor, so two fills in one process exclude each other just as two
processes do, and the kernel releases it when the descriptor closes, including when the
process is killed. A key maps to one byte of a large sparse range; two keys sharing a byte
only ever wait for each other, which is harmless.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

from storage.clock import Clock

SLOTS = 1 << 30
# Polling for a lock another process holds: first pause, doubling up to the longest.
POLL_FIRST = 0.005
POLL_MAX = 0.05
# struct flock on Linux x86-64/arm64: l_type, l_whence, (pad), l_start, l_len, l_pid, (pad).
_FLOCK = struct.Struct("hhxxxxqqixxxx")


def slot_of(key_hash: str) -> int:
    return int(key_hash[:15], 16) % SLOTS


class KeyLock:
    """One attempt at holding the lock of one key. Call `release()` (or let the process die)."""

    def __init__(self, lock_file: Path, key_hash: str) -> None:
        self._path = lock_file
        self._slot = slot_of(key_hash)
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never blocks."""
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        request = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, self._slot, 1, 0)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
        except (BlockingIOError, PermissionError):
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    async def acquire(self, wait: float, clock: Clock) -> bool:
        """Take the lock, polling while another process holds it, for at most `wait`
        seconds; past that, go on without it. True if it had to wait at all."""
        if self.try_acquire():
            return False
        give_up = clock.monotonic() + wait
        pause = POLL_FIRST
        while clock.monotonic() < give_up:
            await clock.sleep(pause)
            pause = min(pause * 2, POLL_MAX)
            if self.try_acquire():
                return True
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases its OFD lock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
