"""commit_entry: the audited last step of the write path (invariant 2).

An entry is a head naming a body file. Both are staged as temp files; the commit checks both,
then renames the body, then the head. Whatever is refused, nothing is renamed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.commit import CommitRefused, StagedFile, commit_entry
from storage.layout import Layout

KEY_HASH = "ab" * 32
BODY = b"body bytes" * 1000 + b"last"
HEAD = b'{"a head":"its metadata"}' + b"footer--" * 2
OLD_BODY = b"previous complete body"
OLD_HEAD = b"previous complete head"


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "cache")
    layout.create()
    return layout


@pytest.fixture
def staged(layout: Layout) -> Iterator[tuple[StagedFile, StagedFile]]:
    """A staged head and body, sized right; closed after the test."""
    fds: list[int] = []

    def stage(name: str, data: bytes, final: Path) -> StagedFile:
        path = layout.tmp / name
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        fds.append(fd)
        os.write(fd, data)
        return StagedFile(fd, path, final, len(data))

    body = stage("1-body.tmp", BODY, layout.body_path(KEY_HASH, "1" * 32))
    head = stage("1-head.head", HEAD, layout.entry_path(KEY_HASH))
    yield head, body
    for fd in fds:
        os.close(fd)


def with_size(file: StagedFile, size: int) -> StagedFile:
    return StagedFile(file.fd, file.temp, file.final, size)


def existing_entry(layout: Layout) -> Path:
    """A committed entry at the same key, with another body id."""
    old_body = layout.body_path(KEY_HASH, "0" * 32)
    old_body.write_bytes(OLD_BODY)
    layout.entry_path(KEY_HASH).write_bytes(OLD_HEAD)
    return old_body


def bodies_of_key(layout: Layout) -> list[str]:
    return sorted(p.name for p in (layout.bodies / KEY_HASH[:2]).glob(f"{KEY_HASH}.*"))


def test_commit_puts_exact_bytes_in_place(
    staged: tuple[StagedFile, StagedFile], layout: Layout
) -> None:
    head, body = staged
    commit_entry(head, body)
    assert head.final.read_bytes() == HEAD
    assert body.final.read_bytes() == BODY
    assert os.listdir(layout.tmp) == []


def test_commit_replaces_an_existing_head(
    staged: tuple[StagedFile, StagedFile], layout: Layout
) -> None:
    head, body = staged
    old_body = existing_entry(layout)
    commit_entry(head, body)
    assert head.final.read_bytes() == HEAD
    assert body.final.read_bytes() == BODY
    # Removing the body the old head named is the caller's job, after the switch.
    assert old_body.read_bytes() == OLD_BODY


def test_body_is_in_place_before_the_head_names_it(
    staged: tuple[StagedFile, StagedFile], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the two renames leaves an unnamed body, never a head without one."""
    head, body = staged
    real_rename = os.rename
    renamed: list[Path] = []

    def spy(src: Path, dst: Path) -> None:
        if Path(dst) == head.final:
            assert body.final.read_bytes() == BODY
        real_rename(src, dst)
        renamed.append(Path(dst))

    monkeypatch.setattr(os, "rename", spy)
    commit_entry(head, body)
    assert renamed == [body.final, head.final]


def test_head_only_commit_names_the_body_in_place(
    staged: tuple[StagedFile, StagedFile], layout: Layout
) -> None:
    """After a 304: a new head for the body already stored."""
    head, body = staged
    old_body = existing_entry(layout)
    commit_entry(head, None)
    assert head.final.read_bytes() == HEAD
    assert old_body.read_bytes() == OLD_BODY
    assert bodies_of_key(layout) == [old_body.name]
    assert os.listdir(layout.tmp) == [body.temp.name]  # the unused body temp is untouched


@pytest.mark.parametrize("which", ["body", "head"])
@pytest.mark.parametrize("delta", [-1, 1, "-all", 10**6])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_commit_refuses_a_size_mismatch_and_renames_nothing(
    staged: tuple[StagedFile, StagedFile],
    layout: Layout,
    which: str,
    delta: int | str,
    existing: bool,
) -> None:
    head, body = staged
    if existing:
        old_body = existing_entry(layout)
    wrong = body if which == "body" else head
    wrong = with_size(wrong, 0 if delta == "-all" else wrong.size + int(delta))
    if which == "body":
        body = wrong
    else:
        head = wrong
    with pytest.raises(CommitRefused):
        commit_entry(head, body)
    assert not body.final.exists()
    if existing:
        assert head.final.read_bytes() == OLD_HEAD
        assert old_body.read_bytes() == OLD_BODY
        assert bodies_of_key(layout) == [old_body.name]
    else:
        assert not head.final.exists()
        assert bodies_of_key(layout) == []
    # The temp files are left for the caller to discard.
    assert body.temp.read_bytes() == BODY
    assert head.temp.read_bytes() == HEAD


@pytest.mark.parametrize("delta", [-1, 1])
def test_head_only_commit_refuses_a_size_mismatch(
    staged: tuple[StagedFile, StagedFile], layout: Layout, delta: int
) -> None:
    head, _ = staged
    old_body = existing_entry(layout)
    with pytest.raises(CommitRefused):
        commit_entry(with_size(head, head.size + delta), None)
    assert head.final.read_bytes() == OLD_HEAD
    assert old_body.read_bytes() == OLD_BODY
    assert head.temp.read_bytes() == HEAD


@pytest.mark.parametrize("which", ["body", "head"])
def test_commit_of_a_truncated_temp_file_is_refused(
    staged: tuple[StagedFile, StagedFile], layout: Layout, which: str
) -> None:
    head, body = staged
    old_body = existing_entry(layout)
    truncated = body if which == "body" else head
    os.ftruncate(truncated.fd, truncated.size // 2)  # e.g. a second writer, or a short write
    with pytest.raises(CommitRefused):
        commit_entry(head, body)
    assert not body.final.exists()
    assert head.final.read_bytes() == OLD_HEAD
    assert old_body.read_bytes() == OLD_BODY


def test_a_failed_switch_leaves_no_body_behind(
    staged: tuple[StagedFile, StagedFile], layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head's rename fails (ENOSPC growing the directory, say): the body already in
    place is named by no head and is removed, so the disk is not leaked."""
    old_body = existing_entry(layout)
    head, body = staged
    real_rename = os.rename

    def full(src: Path, dst: Path) -> None:
        if Path(dst) == head.final:
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", full)
    with pytest.raises(OSError):
        commit_entry(head, body)
    assert bodies_of_key(layout) == [old_body.name]  # the old entry, untouched
    assert layout.entry_path(KEY_HASH).read_bytes() == OLD_HEAD
