"""Publishing an entry: its head written to a temp file, the audited commit, and the body of
the entry it replaced removed. Everything around storage.commit.commit_entry, in one call
that runs in a thread."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from storage.commit import CommitRefused, StagedFile, commit_entry
from storage.entry import CorruptEntry, EntryMeta
from storage.fileid import FileId, remove_if_unchanged
from storage.layout import Layout
from storage.lookup import read_head, still_names


def commit_with_head(
    tmp_dir: Path, meta: EntryMeta, head_path: Path, body: StagedFile | None
) -> None:
    """Commit `body` (a fill's) and a head for `meta` naming it, at `head_path`. With `body`
    None (a 304 or a soft purge freshening the headers), commit a new head for the body the
    current head names, which must still be `meta.body_id`: otherwise the entry was replaced
    or removed since it was read, and naming its old body again would undo that."""
    layout = Layout.of_entry(head_path)
    head = meta.encode()
    temp = tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}.head"
    fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, head)
        replaced = _named_body(head_path)
        if body is None and replaced != meta.body_id:
            raise CommitRefused("the entry was replaced or removed since it was read")
        ours = FileId.of(os.fstat(fd))
        try:
            commit_entry(StagedFile(fd, temp, head_path, len(head)), body)
        finally:
            # Also when only the directory's fsync failed: once our head is in place, the
            # body it replaced is named by no head. Readers that opened it keep reading it.
            if replaced not in (None, meta.body_id) and still_names(head_path, ours):
                layout.body_path(head_path.name, replaced).unlink(missing_ok=True)
        if body is None and not layout.body_path(head_path.name, meta.body_id).exists():
            # Evicted or purged between the check and the switch: the head must not outlive
            # its body (it would be a miss reported as corruption).
            remove_if_unchanged(head_path, ours)
            raise CommitRefused("the entry was removed while its head was committed")
    finally:
        os.close(fd)
        temp.unlink(missing_ok=True)  # gone already when the commit renamed it


def _named_body(head_path: Path) -> str | None:
    """The body id the current head names; None if there is none or it is unreadable (a
    broken head's body, if any, is an orphan that the sweep of unnamed bodies removes)."""
    try:
        found = read_head(head_path)
    except CorruptEntry:
        return None
    return None if found is None else found[0].body_id


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
