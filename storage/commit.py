"""The write path's last step. Short on purpose: this is the function to audit."""

from __future__ import annotations

import os
from pathlib import Path


class CommitRefused(Exception):
    """The temp file is not exactly the entry it claims to be; nothing was committed."""


def commit_entry(fd: int, temp_path: Path, final_path: Path, expected_size: int) -> None:
    """Make a fully written temp file visible as an entry, atomically and durably.

    Runs in a thread. The caller has already written body + metadata + footer to `fd`,
    checked the body against Content-Length, and recorded the checksum computed while
    streaming in the metadata; `expected_size` is that body's length plus the trailer's."""
    os.fsync(fd)  # the bytes are on disk before the name can point at them
    actual = os.fstat(fd).st_size
    if actual != expected_size:
        raise CommitRefused(f"temp file holds {actual} bytes, expected {expected_size}")
    os.rename(temp_path, final_path)  # atomic: readers see the old entry or the new, whole
    dir_fd = os.open(final_path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
