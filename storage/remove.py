"""Removing an entry: its head first (the entry is gone the moment it is), then its body."""

from __future__ import annotations

import os
from pathlib import Path

from storage.entry import CorruptEntry
from storage.fileid import FileId, remove_if_unchanged
from storage.layout import Layout
from storage.lookup import read_head


def remove_entry(head: Path, only: FileId | None = None) -> bool:
    """Unlink the head at `head`, then the body it names; True if a head was removed.

    With `only` (the head found corrupt), nothing is removed unless the path still names
    that very file: a fill may have replaced it since, and the new entry stays. A head too
    broken to name its body takes every body file of its hash with it."""
    layout = Layout.of_entry(head)
    try:
        found = read_head(head)
    except CorruptEntry as exc:
        current, body_id = exc.file_id, None
    else:
        if found is None:
            return False
        current, body_id = found[1], found[0].body_id
    if current is None or (only is not None and current != only):
        return False
    if not remove_if_unchanged(head, current):
        return False
    if body_id is not None:
        bodies = [layout.body_path(head.name, body_id)]
    else:
        bodies = list((layout.bodies / head.name[:2]).glob(f"{head.name}.*"))
    for body in bodies:
        try:
            os.unlink(body)
        except FileNotFoundError:
            pass
    return True
