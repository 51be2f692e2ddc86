"""Opening an entry for a hit: every blocking syscall in one call, run in a thread.

A body up to a configured size is also read whole and checked against its stored CRC-32
(the SHA-256 for heads written without one) in that same call, and the hit sends those very
bytes: what was checked is what the client gets, even if the file rots a moment later.
Larger bodies go by sendfile with their size checked only (the scrubber and `pixcache
verify` check their bytes, by SHA-256)."""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from storage.entry import FOOTER, MAX_META_BYTES, CorruptEntry, EntryMeta, Problem, parse_footer
from storage.fileid import FileId
from storage.layout import body_name

# A head replaced this many times while being opened is left for the next request.
REPLACED_RETRIES = 3


@dataclass
class OpenEntry:
    """An open entry; `fd` is its body, which the caller owns and must close."""

    fd: int
    meta: EntryMeta
    size: int  # bytes on disk: head and body
    head_id: FileId
    body_path: Path
    # The whole body, read once and found to match its checksum; None when the body is sent
    # from `fd` (over the check limit, or checking is off).
    checked: bytes | None = None

    @property
    def source(self) -> int | bytes:
        """What a hit sends the body from: the checked bytes, else the body file."""
        return self.fd if self.checked is None else self.checked

    @property
    def identity(self) -> tuple[int, int]:
        """The head's (inode, mtime): tells a replaced entry from this one."""
        return self.head_id.ino, self.head_id.mtime_ns


def read_head(path: str | Path) -> tuple[EntryMeta, FileId] | None:
    """An entry's metadata and the FileId of the head it came from; None when there is none.
    Raises CorruptEntry (with `file_id`) when the head is not exactly metadata + footer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        file_id = FileId.of(st)
        try:
            if st.st_size > MAX_META_BYTES + FOOTER.size:
                raise CorruptEntry(
                    Problem.BAD_FOOTER, f"metadata length out of range ({st.st_size} bytes of head)"
                )
            raw = os.pread(fd, st.st_size, 0)  # heads are small: one read
            meta_len = parse_footer(raw[-FOOTER.size :], len(raw))
            if meta_len + FOOTER.size != len(raw) or len(raw) != st.st_size:
                raise CorruptEntry(
                    Problem.BAD_FOOTER, f"head size {st.st_size} does not match its footer"
                )
            return EntryMeta.decode(raw[: -FOOTER.size]), file_id
        except CorruptEntry as exc:
            exc.file_id = file_id  # so that only this very file is removed
            raise
    finally:
        os.close(fd)


def open_entry(path: str | Path, check_max: int = 0) -> OpenEntry | None:
    """Read the head at `path`, open the body it names, check the body's size; read a body
    of at most `check_max` bytes whole and check its checksum (0: never). None when there is
    no entry (or it was removed meanwhile).

    Raises CorruptEntry when the head is not a complete head, or its body is missing, not
    exactly `body_length` bytes or (when read) not the bytes the checksum names: a
    truncated, padded or rotten body is never served."""
    for _ in range(REPLACED_RETRIES):
        found = read_head(path)
        if found is None:
            return None
        meta, head_id = found
        body_path = body_file(os.fspath(path), meta.body_id)
        try:
            fd = os.open(body_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if still_names(path, head_id):
                raise CorruptEntry(Problem.MISSING_BODY, "body file missing", head_id) from None
            continue  # replaced (its old body removed) or removed meanwhile: look again
        try:
            size = os.fstat(fd).st_size
            if size != meta.body_length:
                raise CorruptEntry(
                    Problem.SIZE_MISMATCH,
                    f"body size {size} does not match body {meta.body_length}",
                    head_id,
                )
            checked = None
            if 0 < size <= check_max:
                checked = read_checked(fd, meta, head_id)
        except BaseException:
            os.close(fd)
            raise
        return OpenEntry(fd, meta, size + head_id.size, head_id, Path(body_path), checked)
    return None


def read_checked(fd: int, meta: EntryMeta, head_id: FileId) -> bytes:
    """The whole body of `fd`, in one read, if it matches the metadata's CRC-32 (or, for a
    head without one, its SHA-256). Runs in the lookup's thread call: zlib and hashlib
    release the GIL, so the event loop goes on meanwhile. Raises CorruptEntry otherwise."""
    data = os.pread(fd, meta.body_length, 0)
    while len(data) < meta.body_length:  # a regular file reads whole unless cut meanwhile
        more = os.pread(fd, meta.body_length - len(data), len(data))
        if not more:
            raise CorruptEntry(
                Problem.BAD_METADATA,
                f"body ends at byte {len(data)} of {meta.body_length}",
                head_id,
            )
        data += more
    if meta.crc32 is not None:
        actual, expected = f"{zlib.crc32(data):08x}", f"{meta.crc32:08x}"
    else:
        actual, expected = hashlib.sha256(data).hexdigest(), meta.sha256
    if actual != expected:
        reason = f"checksum mismatch: body sums to {actual[:16]}, head says {expected[:16]}"
        raise CorruptEntry(Problem.CHECKSUM_MISMATCH, reason, head_id)
    return data


def body_file(head: str, body_id: str) -> str:
    """The body file a head names: Layout.body_path in plain string operations, because
    this runs on every hit (pathlib costs several microseconds per step)."""
    *root, _entries, bucket, key_hash = head.rsplit("/", 3)
    top = root[0] if root else "."  # a cache dir given as "." makes heads "entries/ab/..."
    return f"{top}/bodies/{bucket}/{body_name(key_hash, body_id)}"


def still_names(path: str | Path, head_id: FileId) -> bool:
    """Whether `path` is still the very head that was read."""
    try:
        return FileId.of(os.lstat(path)) == head_id
    except FileNotFoundError:
        return False
