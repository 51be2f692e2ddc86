"""commit_entry: the audited last step of the write path (invariant 2)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.commit import CommitRefused, commit_entry

DATA = b"body bytes" * 1000 + b"trailer"


@pytest.fixture
def temp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "entries").mkdir()
    path = tmp_path / "tmp" / "1-abc.tmp"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    os.write(fd, DATA)
    yield fd, path
    os.close(fd)


def test_commit_puts_exact_bytes_in_place(temp: tuple[int, Path], tmp_path: Path) -> None:
    fd, temp_path = temp
    final = tmp_path / "entries" / "final"
    commit_entry(fd, temp_path, final, len(DATA))
    assert final.read_bytes() == DATA
    assert not temp_path.exists()
    assert os.listdir(tmp_path / "tmp") == []


def test_commit_replaces_an_existing_entry(temp: tuple[int, Path], tmp_path: Path) -> None:
    fd, temp_path = temp
    final = tmp_path / "entries" / "final"
    final.write_bytes(b"old entry")
    commit_entry(fd, temp_path, final, len(DATA))
    assert final.read_bytes() == DATA


@pytest.mark.parametrize("delta", [-1, 1, -len(DATA), 10**6])
def test_commit_refuses_a_size_mismatch(temp: tuple[int, Path], tmp_path: Path, delta: int) -> None:
    fd, temp_path = temp
    final = tmp_path / "entries" / "final"
    with pytest.raises(CommitRefused):
        commit_entry(fd, temp_path, final, len(DATA) + delta)
    assert not final.exists()
    # The temp file is left for the caller to discard.
    assert temp_path.read_bytes() == DATA


def test_refused_commit_leaves_the_existing_entry_untouched(
    temp: tuple[int, Path], tmp_path: Path
) -> None:
    fd, temp_path = temp
    final = tmp_path / "entries" / "final"
    final.write_bytes(b"previous complete entry")
    with pytest.raises(CommitRefused):
        commit_entry(fd, temp_path, final, len(DATA) + 1)
    assert final.read_bytes() == b"previous complete entry"


def test_commit_of_a_truncated_temp_file_is_refused(temp: tuple[int, Path], tmp_path: Path) -> None:
    fd, temp_path = temp
    os.ftruncate(fd, len(DATA) // 2)  # e.g. a second writer, or a short write
    final = tmp_path / "entries" / "final"
    with pytest.raises(CommitRefused):
        commit_entry(fd, temp_path, final, len(DATA))
    assert not final.exists()
