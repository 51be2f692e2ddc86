"""The write path's last step. Short on purpose: this is the function to audit."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class CommitRefused(Exception):
    """The temp file is not exactly the entry it claims to be; nothing was committed."""


@dataclass(frozen=True)
class StagedFile:
    """A fully written temp file, open as `fd`, and the name it is to have."""

    fd: int
    temp: Path
    final: Path
    size: int  # the bytes it must hold


def commit_entry(head: StagedFile, body: StagedFile | None) -> None:
    """Make an entry visible, atomically and durably: its body (None when the head names a
    body already in place, as after a 304) under a new name, then its head over the old one.

    Runs in a thread. The caller has checked the body against Content-Length and recorded
    the checksum computed while streaming in the head's metadata."""
    staged = [head] if body is None else [body, head]
    for file in staged:
        os.fsync(file.fd)  # the bytes are on disk before a name can point at them
        actual = os.fstat(file.fd).st_size
        if actual != file.size:
            raise CommitRefused(f"{file.temp.name} holds {actual} bytes, expected {file.size}")
    if body is not None:
        os.rename(body.temp, body.final)  # a name no head points to yet: invisible
    try:
        if body is not None:
            _fsync_dir(body.final.parent)  # the body's name is durable before a head names it
        os.rename(head.temp, head.final)  # the atomic switch from the old entry to the new
    except BaseException:
        if body is not None:
            os.unlink(body.final)  # named by no head: removing it costs nothing
        raise
    _fsync_dir(head.final.parent)


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
