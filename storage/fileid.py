"""Which file a path named when it was looked at, and removing it only if it still does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class FileId(NamedTuple):
    """Which file a path named when it was checked. Entries are never modified in place,
    so a different value means the path now names another file."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileId:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def remove_if_unchanged(path: Path, file_id: FileId) -> bool:
    """Unlink `path` only if it still names the file that was found corrupt.

    A fill that replaced the entry since then has put a new file there, which stays. Between
    the lstat and the unlink a commit could still slip in; the worst it costs is one miss."""
    try:
        if FileId.of(os.lstat(path)) != file_id:
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
