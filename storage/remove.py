"""Removing an entry: its head first (the entry is gone the moment it is), then its body."""

from __future__ import annotations

import os
from pathlib import Path

from storage.entry import CorruptEntry
from storage.fileid import FileId, remove_if_unchanged
from storage.layout import Layout
from storage.lookup import read_head


def entry_files(head: Path) -> tuple[FileId, list[Path]] | None:
    """The head's FileId and the body files that go with it; None when there is no head.

    A head too broken (or too unreadable) to name its body owns every body file of its hash."""
    layout = Layout.of_entry(head)
    try:
        found = read_head(head)
    except CorruptEntry as exc:
        current = exc.file_id
    except OSError:
        # Unreadable (EIO, say), yet it can still be unlinked: not a reason to keep it.
        try:
            current = FileId.of(os.lstat(head))
        except FileNotFoundError:
            return None
    else:
        if found is None:
            return None
        meta, current = found
        return current, [layout.body_path(head.name, meta.body_id)]
    return current, list((layout.bodies / head.name[:2]).glob(f"{head.name}.*"))


def remove_entry(head: Path, only: FileId | None = None) -> bool:
    """Unlink the head at `head`, then the body it names; True if a head was removed.

    With `only` (the head found corrupt), nothing is removed unless the path still names
    that very file: a fill may have replaced it since, and the new entry stays."""
    found = entry_files(head)
    if found is None:
        return False
    current, bodies = found
    if current is None or (only is not None and current != only):
        return False
    if not remove_if_unchanged(head, current):
        return False
    for body in bodies:
        try:
            os.unlink(body)
        except FileNotFoundError:
            pass
    return True
