"""Opening an entry for a hit: every blocking syscall in one call, run in a thread."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from storage.entry import FOOTER, CorruptEntry, EntryMeta, parse_footer
from storage.fileid import FileId

# One read from the end usually holds footer and metadata together.
TAIL_READ = 16 * 1024


@dataclass
class OpenEntry:
    """An open entry; the caller owns `fd` and must close it."""

    fd: int
    meta: EntryMeta
    size: int
    identity: tuple[int, int]  # (inode, mtime): tells a replaced entry from this one


def open_entry(path: Path) -> OpenEntry | None:
    """open + fstat + read the trailer. None when there is no entry.

    Raises CorruptEntry when the file is not a complete entry: the size on disk must equal
    body + metadata + footer exactly, so a truncated or padded file is never served."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        size = st.st_size
        tail_len = min(size, TAIL_READ)
        tail = os.pread(fd, tail_len, size - tail_len)
        meta_len = parse_footer(tail[-FOOTER.size :], size)
        if meta_len + FOOTER.size > len(tail):
            tail = os.pread(fd, meta_len + FOOTER.size, size - meta_len - FOOTER.size)
        meta = EntryMeta.decode(tail[-FOOTER.size - meta_len : -FOOTER.size])
        if meta.body_length + meta_len + FOOTER.size != size:
            raise CorruptEntry(f"size {size} does not match body {meta.body_length}")
        return OpenEntry(fd, meta, size, (st.st_ino, st.st_mtime_ns))
    except CorruptEntry as exc:
        os.close(fd)
        exc.file_id = FileId.of(st)  # so that only this very file is removed
        raise
    except BaseException:
        os.close(fd)
        raise
