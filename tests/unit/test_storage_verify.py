"""Verification and scrubbing: a corrupt entry is found by its checksum and removed, head and
body; a good one, or one that is merely being replaced, never is (invariant 1).

An entry is a head (entries/ab/<hash>: metadata + footer) naming a body file
(bodies/ab/<hash>.<body_id>: exactly the body's bytes). Entries are written by the store's
own commit; only a test that needs a broken file writes one by hand."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from storage import verify
from storage.entry import FOOTER, MAGIC, MAX_META_BYTES, EntryMeta, new_body_id
from storage.fileid import FileId
from storage.layout import Layout
from storage.lookup import read_head
from storage.publish import commit_with_head
from storage.remove import remove_entry
from storage.scrub import Scrubber
from storage.verify import NotACache, Problem, scan, verify_entry
from storage.walk import TEMP_GRACE, iter_entry_files, iter_orphans
from tests.clock import FakeClock
from tests.commits import descriptors_into
from tests.entries import body_of, commit

BODY = bytes(range(256)) * 40  # 10 KiB
OLD = time.time() - TEMP_GRACE - 60  # an mtime past the grace of files in flight


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "cache")
    layout.create()
    return layout


def make_entry(layout: Layout, body: bytes = BODY, key: str = "/a.png", **kw: bool) -> Path:
    return asyncio.run(commit(layout, body, key, **kw))


def meta_of(head: Path) -> EntryMeta:
    found = read_head(head)
    assert found is not None
    return found[0]


def bodies_of(head: Path) -> list[Path]:
    """Every body file of the head's hash, named or not."""
    return sorted((Layout.of_entry(head).bodies / head.name[:2]).glob(f"{head.name}.*"))


def size_on_disk(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


def head_id(head: Path) -> FileId:
    return FileId.of(os.lstat(head))


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def refresh(head: Path) -> None:
    """Commit a new head naming the same body, as a 304 revalidation does."""
    meta = replace(meta_of(head), response_time=99.0)
    commit_with_head(Layout.of_entry(head).tmp, meta, head, None)


def open_fds(root: Path) -> int:
    """Descriptors of files in the cache open in this process (others, such as sockets a
    collected object closes meanwhile, would make the count wander)."""
    return len(descriptors_into(root))


# -- verify_entry ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"", b"x", BODY, os.urandom(300_000)], ids=["empty", "1B", "10K", "300K"]
)
def test_a_committed_entry_verifies(layout: Layout, body: bytes) -> None:
    path = make_entry(layout, body)
    assert body_of(path).read_bytes() == body  # the body file holds exactly the body
    check = verify_entry(path, chunk=4096)
    assert check.ok and not check.missing and check.problem is None
    assert check.size == size_on_disk(path, body_of(path))
    assert check.file_id == head_id(path)


def test_a_vary_marker_with_an_empty_body_verifies(layout: Layout) -> None:
    path = make_entry(layout, b"", vary_marker=True)
    assert verify_entry(path).ok


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("chunk", [4096, 1 << 20])
def test_one_flipped_body_byte_is_a_checksum_mismatch(
    layout: Layout, where: str, chunk: int
) -> None:
    path = make_entry(layout)
    body = body_of(path)
    flip_byte(body, {"first": 0, "middle": len(BODY) // 2, "last": len(BODY) - 1}[where])
    check = verify_entry(path, chunk=chunk)
    assert check.problem is Problem.CHECKSUM_MISMATCH
    assert not check.ok
    assert check.size == size_on_disk(path, body)
    assert check.file_id == head_id(path)  # the head is what a repair removes


@pytest.mark.parametrize("keep", [0, 1, len(BODY) // 2, len(BODY) - 1])
def test_a_truncated_body_is_a_size_mismatch(layout: Layout, keep: int) -> None:
    path = make_entry(layout)
    body = body_of(path)
    with body.open("r+b") as f:
        f.truncate(keep)
    check = verify_entry(path)
    assert check.problem is Problem.SIZE_MISMATCH and not check.ok
    assert check.size == path.stat().st_size + keep


@pytest.mark.parametrize("extra", [b"x", b"\0" * FOOTER.size, FOOTER.pack(MAGIC, 0)])
def test_bytes_appended_to_a_body_are_a_size_mismatch(layout: Layout, extra: bytes) -> None:
    path = make_entry(layout)
    body = body_of(path)
    with body.open("ab") as f:
        f.write(extra)
    check = verify_entry(path)
    assert check.problem is Problem.SIZE_MISMATCH
    assert check.size == size_on_disk(path, body)


def test_truncated_heads_are_corrupt(layout: Layout) -> None:
    path = make_entry(layout)
    body = body_of(path)
    data = path.read_bytes()
    for keep in (0, 1, FOOTER.size, len(data) // 2, len(data) - FOOTER.size, len(data) - 1):
        path.write_bytes(data[:keep])
        check = verify_entry(path)
        assert check.problem is Problem.BAD_FOOTER and not check.ok, keep
        assert check.file_id is not None and check.file_id.size == keep
        # A head too broken to name its body still owns it: both are the corrupt entry.
        assert check.size == keep + len(BODY)
    assert body.exists()  # verify only reports


@pytest.mark.parametrize("extra", [b"x", b"\0" * FOOTER.size, FOOTER.pack(MAGIC, 0)])
@pytest.mark.parametrize("where", ["appended", "prepended"])
def test_bytes_added_to_a_head_make_it_corrupt(layout: Layout, extra: bytes, where: str) -> None:
    path = make_entry(layout)
    data = path.read_bytes()
    path.write_bytes(data + extra if where == "appended" else extra + data)
    # The head is no longer exactly metadata + its footer: whatever it decodes to, no entry.
    assert verify_entry(path).problem is Problem.BAD_FOOTER


def one_file_entry(body: bytes) -> bytes:
    """An entry as versions before the head/body split wrote it: body, metadata, footer."""
    meta = b'{"key":"/old.png","status":200,"headers":[],"body_length":%d}' % len(body)
    return body + meta + FOOTER.pack(b"PIXCACH1", len(meta))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"GIF89a",
        os.urandom(50_000),
        b"PIXCACH1" * 3,
        b"PIXCACH2" * 3,
        one_file_entry(BODY),
        os.urandom(MAX_META_BYTES + FOOTER.size + 1),
    ],
    ids=["empty", "gif", "random", "magic1", "magic2", "one-file-entry", "huge"],
)
def test_a_foreign_file_is_corrupt(layout: Layout, content: bytes) -> None:
    path = layout.entry_path("ab" * 32)
    path.write_bytes(content)
    check = verify_entry(path)
    assert check.problem is Problem.BAD_FOOTER
    assert check.size == len(content)


def test_unreadable_metadata_is_bad_metadata(layout: Layout) -> None:
    path = layout.entry_path("cd" * 32)
    path.write_bytes(b"{garbage}" + FOOTER.pack(MAGIC, 9))
    assert verify_entry(path).problem is Problem.BAD_METADATA


@pytest.mark.parametrize(
    "body_id",
    ["", "../../../../etc/passwd", "A" * 32, "0" * 31],
    ids=["empty", "path", "upper", "short"],
)
def test_a_head_naming_no_valid_body_id_is_bad_metadata(layout: Layout, body_id: str) -> None:
    path = make_entry(layout)
    body = body_of(path)
    path.write_bytes(replace(meta_of(path), body_id=body_id).encode())
    check = verify_entry(path)
    assert check.problem is Problem.BAD_METADATA
    assert check.size == size_on_disk(path, body)


def test_metadata_without_a_body_id_is_bad_metadata(layout: Layout) -> None:
    path = make_entry(layout)
    meta = meta_of(path).encode()[: -FOOTER.size]
    stripped = meta.replace(b',"body_id":"%s"' % meta_of(path).body_id.encode(), b"")
    assert b"body_id" not in stripped
    path.write_bytes(stripped + FOOTER.pack(MAGIC, len(stripped)))
    assert verify_entry(path).problem is Problem.BAD_METADATA


def test_a_head_whose_body_is_missing_is_corrupt(layout: Layout) -> None:
    path = make_entry(layout)
    body_of(path).unlink()
    check = verify_entry(path)
    assert check.problem is Problem.MISSING_BODY and not check.ok and not check.missing
    assert check.size == path.stat().st_size
    assert check.file_id == head_id(path)


def test_a_head_naming_another_body_than_the_one_there_is_corrupt(layout: Layout) -> None:
    path = make_entry(layout)
    body = body_of(path)
    path.write_bytes(replace(meta_of(path), body_id=new_body_id()).encode())
    assert verify_entry(path).problem is Problem.MISSING_BODY
    assert body.exists()


def test_a_missing_head_is_neither_ok_nor_corrupt(layout: Layout) -> None:
    check = verify_entry(layout.entry_path("ef" * 32))
    assert check.missing and not check.ok and check.problem is None


def failing_pread(monkeypatch: pytest.MonkeyPatch, code: int, at: int) -> None:
    """pread fails at body offset `at`; the head, read whole at offset 0, still reads."""
    real = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        if offset == at:
            raise OSError(code, os.strerror(code))
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)


def failing_head_read(monkeypatch: pytest.MonkeyPatch, code: int, head: Path) -> None:
    """Every read of this head fails; its body and every other file still read."""
    real = os.pread
    inode = head.stat().st_ino

    def pread(fd: int, n: int, offset: int) -> bytes:
        if os.fstat(fd).st_ino == inode:
            raise OSError(code, os.strerror(code))
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)


def test_a_failing_disk_read_is_a_read_error(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_entry(layout, os.urandom(64 * 1024))
    failing_pread(monkeypatch, errno.EIO, 8192)
    check = verify_entry(path, chunk=4096)
    assert check.problem is Problem.READ_ERROR


def test_a_head_the_disk_cannot_read_is_a_read_error(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_entry(layout)
    failing_head_read(monkeypatch, errno.EIO, path)
    check = verify_entry(path)
    assert check.problem is Problem.READ_ERROR
    assert check.file_id == head_id(path)


@pytest.mark.parametrize("where", ["body", "head"])
def test_running_out_of_descriptors_never_makes_an_entry_corrupt(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    path = make_entry(layout, os.urandom(64 * 1024))
    if where == "body":
        failing_pread(monkeypatch, errno.EMFILE, 8192)
    else:
        failing_head_read(monkeypatch, errno.EMFILE, path)
    with pytest.raises(OSError):
        verify_entry(path, chunk=4096)


def test_verify_closes_every_descriptor(layout: Layout) -> None:
    good = make_entry(layout, key="/good")
    bad = make_entry(layout, key="/bad")
    flip_byte(body_of(bad), 0)
    short = make_entry(layout, key="/short")
    with body_of(short).open("r+b") as f:
        f.truncate(10)
    bodiless = make_entry(layout, key="/bodiless")
    body_of(bodiless).unlink()
    garbage = layout.entry_path("ab" * 32)
    garbage.write_bytes(b"junk")
    before = open_fds(layout.root)
    for _ in range(10):
        for path in (good, bad, short, bodiless, garbage):
            verify_entry(path, chunk=4096)
    assert open_fds(layout.root) == before


# -- removing a corrupt entry: head and body, and only if unchanged ----------------------


def test_a_corrupt_entry_replaced_since_its_check_is_not_removed(layout: Layout) -> None:
    path = make_entry(layout)
    old_body = body_of(path)
    flip_byte(old_body, 0)
    check = verify_entry(path)
    assert check.problem is Problem.CHECKSUM_MISMATCH and check.file_id is not None
    assert make_entry(layout) == path  # a fill commits the same key again
    assert not old_body.exists()  # the commit removed the body the old head named
    new_body = body_of(path)
    assert remove_entry(path, check.file_id) is False
    assert verify_entry(path).ok and new_body.exists()
    # ... while an unchanged corrupt entry is removed, head and body.
    flip_byte(new_body, 1)
    check = verify_entry(path)
    assert check.file_id is not None
    assert remove_entry(path, check.file_id) is True
    assert not path.exists() and bodies_of(path) == []


def test_a_corrupt_entry_whose_head_was_refreshed_since_its_check_is_not_removed(
    layout: Layout,
) -> None:
    path = make_entry(layout)
    body = body_of(path)
    flip_byte(body, 0)
    check = verify_entry(path)
    assert check.problem is Problem.CHECKSUM_MISMATCH and check.file_id is not None
    refresh(path)  # a 304 commits a new head naming the same body
    assert body_of(path) == body
    assert remove_entry(path, check.file_id) is False
    assert path.exists() and body.exists()
    # The new head names the same bad body: the next check finds it and removes both.
    check = verify_entry(path)
    assert check.problem is Problem.CHECKSUM_MISMATCH and check.file_id is not None
    assert remove_entry(path, check.file_id) is True
    assert not path.exists() and bodies_of(path) == []


def test_removing_a_head_too_broken_to_name_its_body_takes_every_body_of_its_hash(
    layout: Layout,
) -> None:
    path = make_entry(layout)
    other = make_entry(layout, key="/other")
    stale = body_of(path).with_name(f"{path.name}.{new_body_id()}")
    stale.write_bytes(b"left by a crash")
    path.write_bytes(b"junk")
    check = verify_entry(path)
    assert check.problem is Problem.BAD_FOOTER and check.file_id is not None
    assert check.size == size_on_disk(path, *bodies_of(path))
    assert remove_entry(path, check.file_id) is True
    assert not path.exists() and bodies_of(path) == []
    assert verify_entry(other).ok


# -- walking the layout: entries and orphans ---------------------------------------------

ORPHAN_HASH = "ab" * 32  # no head has this hash


def make_orphans(layout: Layout, beside: Path) -> dict[str, Path]:
    """Every kind of file no lookup will ever find; body files no head names go next to
    `beside`'s body (its head names another) and under a hash with no head at all."""
    entries, bodies = layout.entries / "ab", layout.bodies / "ab"
    beside_bodies = body_of(beside).parent
    stray = {
        "bad name": entries / "not-a-hash",
        "upper case": entries / ("AB" * 32),
        "wrong bucket": entries / ("cd" * 32),
        "dir in bucket": entries / ("ab" * 31 + "00"),
        "bad bucket": layout.entries / "zz",
        "file in entries": layout.entries / "README",
        "bad body name": bodies / "not-a-body",
        "body without id": bodies / ORPHAN_HASH,
        "body id upper case": bodies / f"{ORPHAN_HASH}.{'AB' * 16}",
        "body in wrong bucket": bodies / f"{'cd' * 32}.{new_body_id()}",
        "dir in body bucket": bodies / f"{'ab' * 31}01.{new_body_id()}",
        "bad body bucket": layout.bodies / "zz",
        "file in bodies": layout.bodies / "README",
        "old body, no head": bodies / f"{ORPHAN_HASH}.{new_body_id()}",
        "young body, no head": bodies / f"{'ab' * 31}02.{new_body_id()}",
        "old body, head names another": beside_bodies / f"{beside.name}.{new_body_id()}",
        "young body, head names another": beside_bodies / f"{beside.name}.{new_body_id()}",
        "old temp": layout.tmp / "123-old.tmp",
        "young temp": layout.tmp / "456-young.tmp",
        "root stray": layout.root / "notes.txt",
    }
    for name, path in stray.items():
        if name in ("dir in bucket", "bad bucket", "dir in body bucket", "bad body bucket"):
            path.mkdir()
            (path / "inner").write_bytes(b"12345")
        else:
            path.write_bytes(b"x" * 100)
        if name.startswith("old"):
            os.utime(path, (OLD, OLD))
    return stray


# What --repair must leave alone: files that may be a fill or commit in flight, and what
# lies outside the layout.
KEPT = {"young temp", "root stray", "young body, no head", "young body, head names another"}


def test_iter_entry_files_finds_only_what_a_lookup_can_reach(layout: Layout) -> None:
    entries = {make_entry(layout, key=f"/{i}") for i in range(5)}
    make_orphans(layout, beside=next(iter(entries)))
    assert set(iter_entry_files(layout)) == entries


def test_orphans_are_everything_else(layout: Layout) -> None:
    entries = [make_entry(layout, key=f"/{i}") for i in range(3)]
    stray = make_orphans(layout, beside=entries[0])
    # What a running pixcache keeps at the top of the cache dir is part of the layout.
    for name in ("locks", "index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", "lost+found"):
        (layout.root / name).write_bytes(b"")
    found = {orphan.path: orphan for orphan in iter_orphans(layout)}
    # Every named body is part of its entry, never an orphan.
    assert set(found) == set(stray.values())
    assert found[stray["dir in bucket"]].size == 5
    assert found[stray["dir in body bucket"]].size == 5
    for name in ("old body, no head", "young body, head names another"):
        assert found[stray[name]].reason == "body no entry names"
    assert "may be a commit in flight" in found[stray["young body, no head"]].keep
    # --repair may remove all of these but young temp and body files and what lies
    # outside the layout.
    kept = {path for path, orphan in found.items() if orphan.keep}
    assert kept == {stray[name] for name in KEPT}


def test_the_body_of_an_unreadable_head_is_left_to_the_entry_check(layout: Layout) -> None:
    path = make_entry(layout)
    body = body_of(path)
    os.utime(body, (OLD, OLD))
    path.write_bytes(b"junk")
    assert list(iter_orphans(layout)) == []
    summary = scan(layout.root, repair=True)
    assert (summary.corrupt.count, summary.orphaned.count) == (1, 0)
    assert summary.removed.bytes == len(b"junk") + len(BODY)
    assert not path.exists() and not body.exists()


# -- scan ---------------------------------------------------------------------------------


def bad_cache(layout: Layout) -> tuple[list[Path], dict[str, tuple[Path, Path]], dict[str, Path]]:
    """Good entries, corrupt entries (head and body path each) and orphans."""
    good = [make_entry(layout, os.urandom(5000 + i), key=f"/good/{i}") for i in range(4)]
    bad = {}
    for problem in ("flipped", "truncated body", "padded body", "broken head", "no body"):
        head = make_entry(layout, key=f"/bad/{problem}")
        bad[problem] = (head, body_of(head))
    flip_byte(bad["flipped"][1], 10)
    with bad["truncated body"][1].open("r+b") as f:
        f.truncate(100)
    with bad["padded body"][1].open("ab") as f:
        f.write(b"appended")
    head = bad["broken head"][0]
    head.write_bytes(head.read_bytes()[:-1])
    bad["no body"][1].unlink()
    return good, bad, make_orphans(layout, beside=good[0])


def test_scan_counts_and_leaves_everything_in_place(layout: Layout) -> None:
    good, bad, stray = bad_cache(layout)
    summary = scan(layout.root, repair=False)
    assert (summary.ok.count, summary.corrupt.count) == (4, 5)
    assert summary.ok.bytes == sum(size_on_disk(p, body_of(p)) for p in good)
    assert summary.corrupt.bytes == sum(size_on_disk(*files) for files in bad.values())
    assert summary.orphaned.count == len(stray)
    assert summary.orphaned.bytes == sum(100 if p.is_file() else 5 for p in stray.values())
    assert summary.removed.count == 0
    on_disk = [*good, *(p for files in bad.values() for p in files), *stray.values()]
    assert all(p.exists() for p in on_disk if p != bad["no body"][1])
    text = summary.render()
    for problem in ("checksum mismatch", "size mismatch", "bad footer", "missing body"):
        assert problem in text
    assert "--repair" in text


def test_repair_removes_exactly_the_bad_ones(layout: Layout) -> None:
    good, bad, stray = bad_cache(layout)
    corrupt_bytes = sum(size_on_disk(*files) for files in bad.values())
    stray_bytes = {p: 100 if p.is_file() else 5 for p in stray.values()}
    summary = scan(layout.root, repair=True)
    assert summary.corrupt.count == 5
    for head, _body in bad.values():  # head and body both gone
        assert not head.exists() and bodies_of(head) == [], head
    assert all(verify_entry(p).ok for p in good)
    kept = {stray[name] for name in KEPT}
    for path in stray.values():
        assert path.exists() == (path in kept), path
    assert summary.removed.count == 5 + len(stray) - len(kept)
    removed_strays = sum(size for p, size in stray_bytes.items() if p not in kept)
    assert summary.removed.bytes == corrupt_bytes + removed_strays
    assert summary.kept.count == len(kept)
    assert "younger than 1 h" in summary.render()
    # A second run finds only what the first left alone on purpose.
    again = scan(layout.root, repair=True)
    assert (again.ok.count, again.corrupt.count, again.orphaned.count) == (4, 0, len(kept))


def test_repair_removes_a_head_whose_body_is_missing(layout: Layout) -> None:
    good = make_entry(layout, key="/good")
    path = make_entry(layout)
    body_of(path).unlink()
    summary = scan(layout.root, repair=False)
    assert summary.corrupt.count == 1 and path.exists()
    assert [(f.kind, f.path) for f in summary.findings] == [("corrupt", path)]
    assert summary.findings[0].reason.startswith("missing body")
    summary = scan(layout.root, repair=True)
    assert summary.removed.count == 1 and summary.removed.bytes == summary.corrupt.bytes
    assert not path.exists()
    assert verify_entry(good).ok
    again = scan(layout.root, repair=True)
    assert (again.ok.count, again.corrupt.count, again.orphaned.count) == (1, 0, 0)


@pytest.mark.parametrize("left_by", ["crash before the head's rename", "crash after it"])
def test_a_body_no_head_names_is_removed_once_old_and_left_alone_while_young(
    layout: Layout, left_by: str
) -> None:
    path = make_entry(layout)
    body = body_of(path)
    if left_by == "crash before the head's rename":
        path.unlink()  # the body is in place, no head names it
    else:  # the new head is in place, the body it replaced was not removed
        saved = layout.tmp / "saved"
        os.link(body, saved)
        assert make_entry(layout) == path and not body.exists()
        os.rename(saved, body)
    # Young: it may be a commit in flight, so even --repair leaves it.
    summary = scan(layout.root, repair=True)
    assert summary.orphaned.count == 1 and summary.kept.count == 1
    assert summary.removed.count == 0 and body.exists()
    (finding,) = summary.findings
    assert (finding.kind, finding.path, finding.reason) == ("orphan", body, "body no entry names")
    assert finding.outcome.startswith("left alone: younger than 1 h")
    # Old: a leftover, found without --repair and removed with it.
    os.utime(body, (OLD, OLD))
    summary = scan(layout.root, repair=False)
    assert summary.orphaned.count == 1 and body.exists()
    summary = scan(layout.root, repair=True)
    assert (summary.removed.count, summary.removed.bytes) == (1, len(BODY))
    assert not body.exists()
    if path.exists():
        assert verify_entry(path).ok
    again = scan(layout.root, repair=True)
    assert (again.corrupt.count, again.orphaned.count) == (0, 0)


@pytest.mark.parametrize("change", ["refill", "refresh"])
def test_repair_keeps_an_entry_replaced_while_it_was_checked(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    path = make_entry(layout)
    flip_byte(body_of(path), 0)
    real_verify = verify.verify_entry

    def check_then_replace(entry: Path, chunk: int = verify.CHUNK) -> verify.EntryCheck:
        check = real_verify(entry, chunk)
        if change == "refill":  # a fill commits the key again: new head, new body
            assert make_entry(layout) == entry
        else:  # a 304 commits a new head naming the same body
            refresh(entry)
        return check

    monkeypatch.setattr(verify, "verify_entry", check_then_replace)
    summary = scan(layout.root, repair=True)
    assert (summary.corrupt.count, summary.removed.count, summary.kept.count) == (1, 0, 1)
    (finding,) = summary.findings
    assert finding.outcome == "left alone: replaced while being checked"
    assert path.exists() and bodies_of(path) == [body_of(path)]
    monkeypatch.setattr(verify, "verify_entry", real_verify)
    if change == "refill":
        assert verify_entry(path).ok
    else:  # still the bad body: the next run removes it, head and body
        summary = scan(layout.root, repair=True)
        assert (summary.corrupt.count, summary.removed.count) == (1, 1)
        assert not path.exists() and bodies_of(path) == []


def test_repair_removes_a_head_the_disk_cannot_read(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = make_entry(layout, key="/good")
    path = make_entry(layout)
    body = body_of(path)
    failing_head_read(monkeypatch, errno.EIO, path)
    summary = scan(layout.root, repair=True)
    assert (summary.ok.count, summary.corrupt.count, summary.removed.count) == (1, 1, 1)
    assert summary.findings[0].reason.startswith("read error")
    assert not path.exists() and not body.exists()
    assert verify_entry(good).ok


def test_scan_reports_progress(layout: Layout) -> None:
    for i in range(5):
        make_entry(layout, key=f"/{i}")
    calls: list[tuple[int, int]] = []
    scan(layout.root, repair=False, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]


def test_scan_refuses_a_directory_that_is_not_a_cache(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_bytes(b"keep me")
    with pytest.raises(NotACache):
        scan(tmp_path, repair=True)
    assert (tmp_path / "precious.txt").exists()
    with pytest.raises(FileNotFoundError):
        scan(tmp_path / "missing", repair=False)


# -- the scrubber -------------------------------------------------------------------------


class Reports:
    def __init__(self) -> None:
        self.calls: list[tuple[Path, str]] = []
        self.event = asyncio.Event()

    def __call__(self, path: Path, reason: str) -> None:
        self.calls.append((path, reason))
        self.event.set()


async def scrub_until_reported(layout: Layout) -> tuple[Scrubber, Reports]:
    """Run a fast scrubber until it reported something and finished a whole pass."""
    reports = Reports()
    scrubber = Scrubber(layout, 100_000_000, reports, pass_pause=3600)
    task = asyncio.create_task(scrubber.run())
    try:
        await asyncio.wait_for(reports.event.wait(), 10)
        while scrubber.passes < 1:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    return scrubber, reports


async def test_the_scrubber_removes_a_flipped_entry_and_keeps_the_good(layout: Layout) -> None:
    good = [await commit(layout, os.urandom(3000), key=f"/good/{i}") for i in range(5)]
    bad = await commit(layout, os.urandom(200_000), key="/bad")
    bad_body = body_of(bad)
    flip_byte(bad_body, 150_000)
    _, reports = await scrub_until_reported(layout)
    assert reports.calls == [(bad, "checksum mismatch")]
    assert not bad.exists() and not bad_body.exists() and bodies_of(bad) == []
    assert all(verify_entry(p).ok for p in good)


async def test_the_scrubber_removes_a_head_whose_body_is_missing(layout: Layout) -> None:
    good = await commit(layout, os.urandom(3000), key="/good")
    bad = await commit(layout, os.urandom(3000), key="/bad")
    body_of(bad).unlink()
    _, reports = await scrub_until_reported(layout)
    assert reports.calls == [(bad, "missing body")]
    assert not bad.exists()
    assert verify_entry(good).ok


async def test_scrubbing_reads_at_most_the_rate(layout: Layout) -> None:
    for i in range(3):
        await commit(layout, os.urandom(1_000_000), key=f"/{i}")
    clock = FakeClock(virtual=True)  # its sleeps take no real time
    scrubber = Scrubber(layout, 1_000_000, Reports(), clock=clock)
    started = clock.monotonic()
    await scrubber.scrub_pass()
    # 3 MB at 1 MB/s: the lower bound is the behaviour; how fast it can go is bench/'s business.
    assert clock.monotonic() - started >= 2.0


async def scrub_while(layout: Layout, change: Callable[[], Awaitable[None]]) -> Reports:
    """Scrub slowly (64 KiB/s, 64 KiB chunks) and `change` the entry after its first chunk."""
    reports = Reports()
    clock = FakeClock()
    scrubber = Scrubber(layout, 65536, reports, clock=clock)
    task = asyncio.create_task(scrubber.scrub_pass())
    await clock.until_sleeping()  # the first chunk is read; the scrubber is pacing
    await change()
    clock.virtual = True  # the rest of the pass without waiting out its pacing
    clock.advance(0)
    await asyncio.wait_for(task, 20)
    return reports


async def test_the_scrubber_skips_an_entry_removed_under_it(layout: Layout) -> None:
    path = await commit(layout, os.urandom(200_000))
    flip_byte(body_of(path), 190_000)

    async def evict() -> None:
        assert remove_entry(path)  # head, then body: as eviction and purge remove it

    reports = await scrub_while(layout, evict)
    assert reports.calls == []
    assert not path.exists() and bodies_of(path) == []


async def test_a_body_that_vanishes_under_the_scrubber_leaves_a_corrupt_head(
    layout: Layout,
) -> None:
    path = await commit(layout, os.urandom(200_000))

    async def lose_body() -> None:
        body_of(path).unlink()

    reports = await scrub_while(layout, lose_body)
    assert reports.calls == [(path, "missing body")]
    assert not path.exists()


@pytest.mark.parametrize("new_is_corrupt", [False, True], ids=["new-good", "new-corrupt"])
async def test_the_scrubber_checks_a_replaced_entry_as_the_new_one(
    layout: Layout, new_is_corrupt: bool
) -> None:
    path = await commit(layout, os.urandom(200_000))
    old_body = body_of(path)
    flip_byte(old_body, 190_000)  # the old body is corrupt past the first chunk ...

    async def refill() -> None:
        assert await commit(layout, os.urandom(100_000)) == path  # ... a fill replaces it
        if new_is_corrupt:
            flip_byte(body_of(path), 99_000)

    reports = await scrub_while(layout, refill)
    assert not old_body.exists()
    if new_is_corrupt:
        assert reports.calls == [(path, "checksum mismatch")]
        assert not path.exists() and bodies_of(path) == []
    else:
        assert reports.calls == []
        assert verify_entry(path).ok and bodies_of(path) == [body_of(path)]


async def test_the_scrubber_keeps_an_entry_refreshed_under_it_until_the_next_pass(
    layout: Layout,
) -> None:
    path = await commit(layout, os.urandom(200_000))
    body = body_of(path)
    flip_byte(body, 190_000)

    async def revalidate() -> None:  # a 304: a new head naming the same (bad) body
        await asyncio.get_running_loop().run_in_executor(None, refresh, path)

    reports = await scrub_while(layout, revalidate)
    # What was checked is the old head's: the new head is not removed for it ...
    assert reports.calls == []
    assert path.exists() and body.exists()
    # ... but it names the same bad body, which the next pass finds.
    reports = Reports()
    await Scrubber(layout, 100_000_000, reports).scrub_pass()
    assert reports.calls == [(path, "checksum mismatch")]
    assert not path.exists() and bodies_of(path) == []


async def test_a_cancelled_scrubber_leaves_no_descriptor_open(layout: Layout) -> None:
    await commit(layout, os.urandom(300_000))
    before = open_fds(layout.root)
    clock = FakeClock()
    task = asyncio.create_task(Scrubber(layout, 65536, Reports(), clock=clock).run())
    await clock.until_sleeping()  # in the middle of the entry, pacing
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A thread call in flight finishes and closes its descriptor.
    for _ in range(200):
        if open_fds(layout.root) == before:
            break
        await asyncio.sleep(0.01)
    assert open_fds(layout.root) == before


def test_the_scrubber_needs_a_positive_rate(layout: Layout) -> None:
    with pytest.raises(ValueError):
        Scrubber(layout, 0, Reports())
