"""Verification and scrubbing: a corrupt entry is found by its checksum and removed; a good
one, or one that is merely being replaced, never is (invariant 1)."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from storage.entry import FOOTER, MAGIC, EntryMeta
from storage.layout import Layout, primary_key_hash
from storage.lookup import TAIL_READ
from storage.scrub import Scrubber
from storage.temp import TempBody
from storage.verify import NotACache, Problem, remove_if_unchanged, scan, verify_entry
from storage.walk import TEMP_GRACE, iter_entry_files, iter_orphans

BODY = bytes(range(256)) * 40  # 10 KiB


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "cache")
    layout.create()
    return layout


async def commit(
    layout: Layout, body: bytes, key: str = "/a.png", *, vary_marker: bool = False
) -> Path:
    """A real entry, written the way a fill writes it."""
    temp = TempBody.create(layout.tmp)
    try:
        for start in range(0, len(body), 65536):
            await temp.append(body[start : start + 65536])
        meta = EntryMeta(
            key=key,
            status=200,
            headers=[("Content-Type", "image/png")],
            request_time=1.0,
            response_time=2.0,
            body_length=temp.written,
            sha256=temp.sha256,
            vary_fields=("accept",) if vary_marker else (),
            is_vary_marker=vary_marker,
            vary_id="v1" if vary_marker else "",
        )
        final = layout.entry_path(primary_key_hash(key))
        await temp.commit(meta, final)
        return final
    finally:
        temp.discard()


def make_entry(layout: Layout, body: bytes = BODY, key: str = "/a.png", **kw: bool) -> Path:
    return asyncio.run(commit(layout, body, key, **kw))


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- verify_entry ------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"x", BODY, os.urandom(3 * TAIL_READ)])
def test_a_committed_entry_verifies(layout: Layout, body: bytes) -> None:
    path = make_entry(layout, body)
    check = verify_entry(path, chunk=4096)
    assert check.ok and not check.missing and check.problem is None
    assert check.size == path.stat().st_size


def test_a_vary_marker_with_an_empty_body_verifies(layout: Layout) -> None:
    path = make_entry(layout, b"", vary_marker=True)
    assert verify_entry(path).ok


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("chunk", [4096, 1 << 20])
def test_one_flipped_body_byte_is_a_checksum_mismatch(
    layout: Layout, where: str, chunk: int
) -> None:
    path = make_entry(layout)
    flip_byte(path, {"first": 0, "middle": len(BODY) // 2, "last": len(BODY) - 1}[where])
    check = verify_entry(path, chunk=chunk)
    assert check.problem is Problem.CHECKSUM_MISMATCH
    assert not check.ok
    assert check.size == path.stat().st_size


def test_truncated_entries_are_corrupt(layout: Layout) -> None:
    path = make_entry(layout)
    data = path.read_bytes()
    for keep in (
        0,
        1,
        FOOTER.size,
        len(BODY),
        len(BODY) + 1,
        len(data) - FOOTER.size,
        len(data) - 1,
    ):
        path.write_bytes(data[:keep])
        check = verify_entry(path)
        assert check.problem is not None and not check.ok, keep
        assert check.size == keep


@pytest.mark.parametrize("extra", [b"x", b"\0" * FOOTER.size, FOOTER.pack(MAGIC, 0)])
def test_bytes_appended_make_an_entry_corrupt(layout: Layout, extra: bytes) -> None:
    path = make_entry(layout)
    with path.open("ab") as f:
        f.write(extra)
    # The file now ends in other bytes than its footer: whatever they decode to, not an entry.
    assert verify_entry(path).problem in (Problem.BAD_FOOTER, Problem.BAD_METADATA)


@pytest.mark.parametrize("content", [b"", b"GIF89a", os.urandom(50_000), b"PIXCACH1" * 3])
def test_a_foreign_file_is_corrupt(layout: Layout, content: bytes) -> None:
    path = layout.entry_path("ab" * 32)
    path.write_bytes(content)
    assert verify_entry(path).problem is Problem.BAD_FOOTER


def test_a_body_shorter_than_its_metadata_says_is_a_size_mismatch(layout: Layout) -> None:
    path = make_entry(layout)
    data = path.read_bytes()
    path.write_bytes(data[1 : len(BODY)] + data[len(BODY) :])  # body lost a byte, trailer kept
    assert verify_entry(path).problem is Problem.SIZE_MISMATCH


def test_unreadable_metadata_is_bad_metadata(layout: Layout) -> None:
    path = layout.entry_path("cd" * 32)
    path.write_bytes(BODY + b"{garbage}" + FOOTER.pack(MAGIC, 9))
    assert verify_entry(path).problem is Problem.BAD_METADATA


def test_a_missing_file_is_neither_ok_nor_corrupt(layout: Layout) -> None:
    check = verify_entry(layout.entry_path("ef" * 32))
    assert check.missing and not check.ok and check.problem is None


def failing_pread(monkeypatch: pytest.MonkeyPatch, code: int, at: int) -> None:
    """pread fails at body offset `at`; the trailer reads (past TAIL_READ) still work."""
    real = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        if offset == at:
            raise OSError(code, os.strerror(code))
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)


def test_a_failing_disk_read_is_a_read_error(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_entry(layout, os.urandom(4 * TAIL_READ))
    failing_pread(monkeypatch, errno.EIO, 8192)
    check = verify_entry(path, chunk=4096)
    assert check.problem is Problem.READ_ERROR


def test_running_out_of_descriptors_never_makes_an_entry_corrupt(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_entry(layout, os.urandom(4 * TAIL_READ))
    failing_pread(monkeypatch, errno.EMFILE, 8192)
    with pytest.raises(OSError):
        verify_entry(path, chunk=4096)


def test_verify_closes_every_descriptor(layout: Layout) -> None:
    good = make_entry(layout, key="/good")
    bad = make_entry(layout, key="/bad")
    flip_byte(bad, 0)
    garbage = layout.entry_path("ab" * 32)
    garbage.write_bytes(b"junk")
    before = open_fds()
    for _ in range(10):
        for path in (good, bad, garbage):
            verify_entry(path, chunk=4096)
    assert open_fds() == before


def test_a_corrupt_entry_replaced_since_its_check_is_not_removed(layout: Layout) -> None:
    path = make_entry(layout)
    flip_byte(path, 0)
    check = verify_entry(path)
    assert check.problem is Problem.CHECKSUM_MISMATCH and check.file_id is not None
    assert make_entry(layout) == path  # a fill commits the same key again
    assert remove_if_unchanged(path, check.file_id) is False
    assert verify_entry(path).ok
    # ... while an unchanged corrupt entry is removed.
    flip_byte(path, 1)
    check = verify_entry(path)
    assert check.file_id is not None
    assert remove_if_unchanged(path, check.file_id) is True
    assert not path.exists()


# -- walking the layout: entries and orphans ---------------------------------------------


def make_orphans(layout: Layout) -> dict[str, Path]:
    bucket = layout.entries / "ab"
    stray = {
        "bad name": bucket / "not-a-hash",
        "upper case": bucket / ("AB" * 32),
        "wrong bucket": bucket / ("cd" * 32),
        "dir in bucket": bucket / ("ab" * 31 + "00"),
        "bad bucket": layout.entries / "zz",
        "file in entries": layout.entries / "README",
        "old temp": layout.tmp / "123-old.tmp",
        "young temp": layout.tmp / "456-young.tmp",
        "root stray": layout.root / "notes.txt",
    }
    for name, path in stray.items():
        if name in ("dir in bucket", "bad bucket"):
            path.mkdir()
            (path / "inner").write_bytes(b"12345")
        else:
            path.write_bytes(b"x" * 100)
    old = time.time() - TEMP_GRACE - 60
    os.utime(stray["old temp"], (old, old))
    return stray


def test_iter_entry_files_finds_only_what_a_lookup_can_reach(layout: Layout) -> None:
    entries = {make_entry(layout, key=f"/{i}") for i in range(5)}
    make_orphans(layout)
    assert set(iter_entry_files(layout)) == entries


def test_orphans_are_everything_else(layout: Layout) -> None:
    for i in range(3):
        make_entry(layout, key=f"/{i}")
    stray = make_orphans(layout)
    # What a running pixcache keeps at the top of the cache dir is part of the layout.
    for name in ("locks", "index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", "lost+found"):
        (layout.root / name).write_bytes(b"")
    found = {orphan.path: orphan for orphan in iter_orphans(layout)}
    assert set(found) == set(stray.values())
    assert found[stray["dir in bucket"]].size == 5
    # --repair may remove all of these but a young temp file and what lies outside the layout
    kept = {path for path, orphan in found.items() if orphan.keep}
    assert kept == {stray["young temp"], stray["root stray"]}


# -- scan ---------------------------------------------------------------------------------


def bad_cache(layout: Layout) -> tuple[list[Path], list[Path], dict[str, Path]]:
    good = [make_entry(layout, os.urandom(5000 + i), key=f"/good/{i}") for i in range(4)]
    bad = [make_entry(layout, key=f"/bad/{i}") for i in range(3)]
    flip_byte(bad[0], 10)
    with bad[1].open("r+b") as f:
        f.truncate(100)
    with bad[2].open("ab") as f:
        f.write(b"appended")
    return good, bad, make_orphans(layout)


def test_scan_counts_and_leaves_everything_in_place(layout: Layout) -> None:
    good, bad, stray = bad_cache(layout)
    summary = scan(layout.root, repair=False)
    assert (summary.ok.count, summary.corrupt.count) == (4, 3)
    assert summary.ok.bytes == sum(p.stat().st_size for p in good)
    assert summary.corrupt.bytes == sum(p.stat().st_size for p in bad)
    assert summary.orphaned.count == len(stray)
    assert summary.removed.count == 0
    assert all(p.exists() for p in [*good, *bad, *stray.values()])
    text = summary.render()
    assert "checksum mismatch" in text and "--repair" in text


def test_repair_removes_exactly_the_bad_ones(layout: Layout) -> None:
    good, bad, stray = bad_cache(layout)
    corrupt_bytes = sum(p.stat().st_size for p in bad)
    summary = scan(layout.root, repair=True)
    assert summary.corrupt.count == 3
    assert not any(p.exists() for p in bad)
    assert all(verify_entry(p).ok for p in good)
    kept = {stray["young temp"], stray["root stray"]}
    for path in stray.values():
        assert path.exists() == (path in kept), path
    assert summary.removed.count == 3 + len(stray) - len(kept)
    assert summary.removed.bytes == corrupt_bytes + 100 * 5 + 5 * 2
    assert summary.kept.count == 2
    assert "younger than 1 h" in summary.render()
    # A second run finds only what the first left alone on purpose.
    again = scan(layout.root, repair=True)
    assert (again.ok.count, again.corrupt.count, again.orphaned.count) == (4, 0, 2)


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


async def test_the_scrubber_removes_a_flipped_entry_and_keeps_the_good(layout: Layout) -> None:
    good = [await commit(layout, os.urandom(3000), key=f"/good/{i}") for i in range(5)]
    bad = await commit(layout, os.urandom(200_000), key="/bad")
    flip_byte(bad, 150_000)
    reports = Reports()
    scrubber = Scrubber(layout, 100_000_000, reports, pass_pause=3600)
    task = asyncio.create_task(scrubber.run())
    try:
        await asyncio.wait_for(reports.event.wait(), 10)
        while scrubber.passes < 1:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert reports.calls == [(bad, "checksum mismatch")]
    assert not bad.exists()
    assert all(verify_entry(p).ok for p in good)


async def test_scrubbing_reads_at_most_the_rate(layout: Layout) -> None:
    for i in range(3):
        await commit(layout, os.urandom(1_000_000), key=f"/{i}")
    scrubber = Scrubber(layout, 1_000_000, Reports())
    loop = asyncio.get_running_loop()
    started = loop.time()
    await scrubber.scrub_pass()
    # 3 MB at 1 MB/s: the lower bound is the behaviour; how fast it can go is bench/'s business.
    assert loop.time() - started >= 2.0


async def scrub_while(layout: Layout, change: Callable[[], Awaitable[None]]) -> Reports:
    """Scrub slowly (64 KiB/s, 64 KiB chunks) and `change` the entry after its first chunk."""
    reports = Reports()
    scrubber = Scrubber(layout, 65536, reports)
    task = asyncio.create_task(scrubber.scrub_pass())
    await asyncio.sleep(0.3)  # the first chunk is read; the scrubber is pacing
    await change()
    await asyncio.wait_for(task, 20)
    return reports


async def test_the_scrubber_skips_an_entry_removed_under_it(layout: Layout) -> None:
    path = await commit(layout, os.urandom(200_000))
    flip_byte(path, 190_000)

    async def evict() -> None:
        path.unlink()

    reports = await scrub_while(layout, evict)
    assert reports.calls == []


@pytest.mark.parametrize("new_is_corrupt", [False, True], ids=["new-good", "new-corrupt"])
async def test_the_scrubber_checks_a_replaced_entry_as_the_new_file(
    layout: Layout, new_is_corrupt: bool
) -> None:
    path = await commit(layout, os.urandom(200_000))
    flip_byte(path, 190_000)  # the old file is corrupt past the first chunk ...

    async def refill() -> None:
        assert await commit(layout, os.urandom(100_000)) == path  # ... a fill replaces it
        if new_is_corrupt:
            flip_byte(path, 99_000)

    reports = await scrub_while(layout, refill)
    if new_is_corrupt:
        assert reports.calls == [(path, "checksum mismatch")]
        assert not path.exists()
    else:
        assert reports.calls == []
        assert verify_entry(path).ok


async def test_a_cancelled_scrubber_leaves_no_descriptor_open(layout: Layout) -> None:
    await commit(layout, os.urandom(300_000))
    before = open_fds()
    task = asyncio.create_task(Scrubber(layout, 65536, Reports()).run())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)  # a thread call in flight finishes and closes its descriptor
    assert open_fds() == before


def test_the_scrubber_needs_a_positive_rate(layout: Layout) -> None:
    with pytest.raises(ValueError):
        Scrubber(layout, 0, Reports())
