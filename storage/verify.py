"""Checking stored entries end to end: the size on open, then the body's SHA-256.

A hit checks the size, and the SHA-256 only of small bodies (storage.lookup), so bit rot
inside a larger body is found here: by `pixcache verify` (`scan`, synchronous) or by the
`Scrubber` of a running proxy, which drives the same steps from the event loop, one thread
call per chunk, at a bounded read rate.

Whatever is removed is first re-checked by inode: a fill may replace an entry at any moment,
and the new file must never be deleted for the old one's fault.
"""

from __future__ import annotations

import errno
import hashlib
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from storage.entry import CorruptEntry, EntryMeta, Problem
from storage.fileid import FileId
from storage.layout import Layout
from storage.lookup import open_entry
from storage.remove import entry_files, remove_entry

# Walking the layout lives in storage.walk; iter_entry_files and iter_orphans are used here too.
from storage.walk import (
    TEMP_GRACE,
    Orphan,
    bucket_dirs,
    entry_files_in,
    iter_entry_files,
    iter_orphans,
)

CHUNK = 1 << 20
# Errors about this process (descriptors, memory, permissions), not about the file: an entry
# is never called corrupt, nor removed, because we ran out of descriptors or ran as the wrong user.
NOT_THE_FILES_FAULT = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EACCES, errno.EPERM}
)


@dataclass(frozen=True)
class EntryCheck:
    path: Path
    size: int  # bytes on disk
    problem: Problem | None = None
    detail: str = ""
    file_id: FileId | None = None  # None when the file could not even be stat'ed
    missing: bool = False  # gone before it could be checked (evicted, purged): not a problem

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.missing

    @property
    def corrupt(self) -> bool:
        return self.problem is not None


def _file_fault(exc: OSError) -> bool:
    return exc.errno not in NOT_THE_FILES_FAULT


class BodyCheck:
    """One entry's checksum check between reads: which file, how far, the hash so far.

    Holds no descriptor: the caller passes one to `feed`, so the scrubber can close it within
    each thread call and nothing outlives a cancellation."""

    def __init__(
        self,
        path: Path,
        meta: EntryMeta,
        size: int,
        file_id: FileId,
        body: tuple[Path, FileId],
        chunk: int,
    ):
        self.path = path  # the head
        self.file_id = file_id  # the head's: what is removed if the body is found bad
        self.body_path, self.body_id = body
        self.bytes_read = size - meta.body_length  # the head, read by open_entry
        self.result: EntryCheck | None = None
        self._meta = meta
        self._size = size
        self._chunk = chunk
        self._offset = 0
        self._hash = hashlib.sha256()
        self._crc32 = 0
        if meta.body_length == 0:  # a Vary marker: nothing to read, sha256(b"") to match
            self._finish_hash()

    def feed(self, fd: int) -> None:
        """Hash the next chunk of the body, read from `fd` (this very body); sets `result`
        once the whole body is read. Raises OSError only when it is not the file's fault."""
        if self.result is not None:
            return
        want = min(self._chunk, self._meta.body_length - self._offset)
        try:
            data = os.pread(fd, want, self._offset)
        except OSError as exc:
            if not _file_fault(exc):
                raise
            self._finish(Problem.READ_ERROR, f"at byte {self._offset}: {exc.strerror or exc}")
            return
        if not data:  # something truncated the body in place after open_entry checked it
            self._finish(Problem.SIZE_MISMATCH, f"file ends at body byte {self._offset}")
            return
        self._hash.update(data)
        self._crc32 = zlib.crc32(data, self._crc32)
        self._offset += len(data)
        self.bytes_read += len(data)
        if self._offset == self._meta.body_length:
            self._finish_hash()

    def _finish_hash(self) -> None:
        actual = self._hash.hexdigest()
        crc32 = self._meta.crc32
        if actual != self._meta.sha256:
            detail = f"body hashes to {actual[:16]}..., metadata says {self._meta.sha256[:16]}..."
            self._finish(Problem.CHECKSUM_MISMATCH, detail)
        elif crc32 is not None and self._crc32 != crc32:
            # What a hit checks: an entry every hit would refuse is corrupt here too.
            detail = f"body's CRC-32 is {self._crc32:08x}, metadata says {crc32:08x}"
            self._finish(Problem.CHECKSUM_MISMATCH, detail)
        else:
            self._finish(None, "")

    def _finish(self, problem: Problem | None, detail: str) -> None:
        self.result = EntryCheck(self.path, self._size, problem, detail, self.file_id)


def open_check(path: Path, chunk: int = CHUNK) -> tuple[BodyCheck, int] | EntryCheck:
    """Open an entry for checking: its BodyCheck and open body fd (the caller closes it), or
    the finished EntryCheck of an entry that is gone or fails before its body is read."""
    before: FileId | None = None
    try:
        before = FileId.of(os.lstat(path))
        entry = open_entry(path)
    except FileNotFoundError:
        return EntryCheck(path, 0, missing=True)
    except (CorruptEntry, OSError) as exc:
        if isinstance(exc, OSError) and not _file_fault(exc):
            raise
        if isinstance(exc, CorruptEntry):
            # The head that was found corrupt is the file removed (never a newer one).
            problem, file_id = exc.problem, exc.file_id or before
        else:
            problem, file_id = Problem.READ_ERROR, before
        return EntryCheck(path, _bytes_of(path, file_id), problem, str(exc), file_id)
    if entry is None:  # removed between lstat and open
        return EntryCheck(path, 0, missing=True)
    try:
        # From the descriptor: if the body was replaced since, this is the file we read.
        body_id = FileId.of(os.fstat(entry.fd))
    except BaseException:
        os.close(entry.fd)
        raise
    body = (entry.body_path, body_id)
    return BodyCheck(path, entry.meta, entry.size, entry.head_id, body, chunk), entry.fd


def _bytes_of(path: Path, head: FileId | None) -> int:
    """What a corrupt entry takes on disk: its head and the body files that go with it,
    the files removing it removes. Only the head's when the path names another by now."""
    if head is None:
        return 0
    found = entry_files(path)
    if found is None or found[0] != head:
        return head.size
    size = head.size
    for body in found[1]:
        try:
            size += os.lstat(body).st_size
        except OSError:
            pass  # a missing body takes no space
    return size


def verify_entry(path: Path, chunk: int = CHUNK) -> EntryCheck:
    """Check one entry file completely: size, footer, metadata, then the body's SHA-256."""
    opened = open_check(path, chunk)
    if isinstance(opened, EntryCheck):
        return opened
    check, fd = opened
    try:
        while check.result is None:
            check.feed(fd)
    finally:
        os.close(fd)
    return check.result


# -- the whole cache, for `pixcache verify` ----------------------------------------------


class NotACache(Exception):
    """The directory holds no entries/: refuse to judge, let alone delete, anything in it."""


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0

    def add(self, nbytes: int) -> None:
        self.count += 1
        self.bytes += nbytes


@dataclass(frozen=True)
class Finding:
    kind: str  # "corrupt" or "orphan"
    path: Path
    reason: str
    outcome: str = ""  # "removed", or why it was (or would be) left alone


@dataclass
class Summary:
    root: Path
    repair: bool
    ok: Tally = field(default_factory=Tally)
    corrupt: Tally = field(default_factory=Tally)
    orphaned: Tally = field(default_factory=Tally)
    removed: Tally = field(default_factory=Tally)
    kept: Tally = field(default_factory=Tally)  # found bad, but --repair left it alone
    findings: list[Finding] = field(default_factory=list)

    def render(self, limit: int = 50) -> str:
        lines = [f"pixcache verify: {self.root}"]
        rows = [("ok", self.ok), ("corrupt", self.corrupt), ("orphaned", self.orphaned)]
        if self.repair:
            rows += [("removed", self.removed), ("left alone", self.kept)]
        for label, tally in rows:
            files = "file " if tally.count == 1 else "files"
            lines.append(f"  {label:<11}{tally.count:>10,} {files} {tally.bytes:>18,} bytes")
        findings = sorted(self.findings, key=lambda f: (f.kind != "corrupt", str(f.path)))
        for finding in findings[:limit]:
            where = os.path.relpath(finding.path, self.root)
            outcome = f" [{finding.outcome}]" if finding.outcome else ""
            lines.append(f"  {finding.kind}: {where}: {finding.reason}{outcome}")
        if len(findings) > limit:
            lines.append(f"  ... and {len(findings) - limit:,} more")
        if not self.repair and any(not f.outcome for f in findings):
            lines.append("Run with --repair to remove the corrupt entries and orphans.")
        if self.kept.count:
            lines.append(
                f"Temp and body files younger than {TEMP_GRACE / 3600:g} h are left alone: they "
                "may be fills of a running pixcache. Nothing outside entries/, bodies/ and tmp/ "
                "is removed."
            )
        return "\n".join(lines)


def _settle_orphan(orphan: Orphan, summary: Summary) -> Finding:
    summary.orphaned.add(orphan.size)
    if orphan.keep:
        if summary.repair:
            summary.kept.add(orphan.size)
            return Finding("orphan", orphan.path, orphan.reason, f"left alone: {orphan.keep}")
        return Finding("orphan", orphan.path, orphan.reason, f"--repair leaves it: {orphan.keep}")
    if summary.repair and orphan.remove():
        summary.removed.add(orphan.size)
        return Finding("orphan", orphan.path, orphan.reason, "removed")
    return Finding("orphan", orphan.path, orphan.reason)


def _settle_corrupt(check: EntryCheck, summary: Summary) -> Finding:
    summary.corrupt.add(check.size)
    reason = f"{check.problem}: {check.detail}" if check.detail else str(check.problem)
    if not summary.repair:
        return Finding("corrupt", check.path, reason)
    if check.file_id is not None and remove_entry(check.path, check.file_id):
        summary.removed.add(check.size)
        return Finding("corrupt", check.path, reason, "removed")
    summary.kept.add(check.size)
    return Finding("corrupt", check.path, reason, "left alone: replaced while being checked")


def scan(
    root: Path,
    *,
    repair: bool,
    progress: Callable[[int, int], None] | None = None,
    now: float | None = None,
) -> Summary:
    """Check every entry and look for orphans; with `repair`, remove the corrupt entries and
    the orphans, except young temp and body files and anything outside entries/, bodies/ and
    tmp/.

    `progress(done, total)` is called after each entry. Raises OSError when `root` is missing
    or unreadable, NotACache when it has no entries/ directory."""
    layout = Layout(root)
    if "entries" not in os.listdir(root) or not layout.entries.is_dir():
        raise NotACache(f"{str(root)!r} is not a pixcache cache directory (no entries/)")
    summary = Summary(root, repair)
    for orphan in iter_orphans(layout, now=now):
        summary.findings.append(_settle_orphan(orphan, summary))
    # Counting first costs one more directory walk, never a read of an entry.
    total = sum(len(entry_files_in(b)) for b in bucket_dirs(layout)) if progress else 0
    for done, path in enumerate(iter_entry_files(layout), 1):
        check = verify_entry(path)
        if check.ok:
            summary.ok.add(check.size)
        elif check.corrupt:
            summary.findings.append(_settle_corrupt(check, summary))
        # else: evicted or purged since the listing, nothing to judge
        if progress is not None:
            progress(done, max(total, done))
    return summary
