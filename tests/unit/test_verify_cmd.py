"""`pixcache verify`: exit status 0 clean, 1 corruption found (repaired or not), 2 no usable
cache directory; the summary on stdout; a progress bar only on a terminal."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
from pathlib import Path

import pytest

from proxy import verify_cmd
from storage.layout import Layout
from storage.walk import TEMP_GRACE
from tests.entries import body_of, commit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PIXCACHE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "cache")
    layout.create()
    return layout


def make_entry(layout: Layout, key: str, body: bytes = b"\xff\xd8" + bytes(5000)) -> Path:
    return asyncio.run(commit(layout, body, key))


def size_on_disk(head: Path) -> int:
    return head.stat().st_size + body_of(head).stat().st_size


def corrupt(head: Path) -> Path:
    """Overwrite the first byte of the entry's body; returns the body file."""
    body = body_of(head)
    with body.open("r+b") as f:
        f.write(b"X")
    return body


def verify(cache_dir: Path | None, *, repair: bool = False) -> int:
    args = argparse.Namespace(cache_dir=None if cache_dir is None else str(cache_dir))
    args.repair = repair
    return verify_cmd.run(args)


def test_a_clean_cache_exits_0_with_a_summary(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [make_entry(layout, f"/{i}.jpg") for i in range(3)]
    assert verify(layout.root) == 0
    out, err = capsys.readouterr()
    total = sum(size_on_disk(p) for p in paths)
    ok_line = next(line for line in out.splitlines() if line.split()[0] == "ok")
    assert ok_line.split()[1:] == ["3", "files", f"{total:,}", "bytes"]
    assert "corrupt: " not in out
    assert err == ""  # not a terminal: no progress bar


def test_corruption_exits_1_and_is_left_in_place_without_repair(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    good = make_entry(layout, "/good.jpg")
    bad = make_entry(layout, "/bad.jpg")
    bad_body = corrupt(bad)
    assert verify(layout.root) == 1
    out = capsys.readouterr().out
    assert "checksum mismatch" in out and bad.name in out
    assert "--repair" in out
    assert bad.exists() and bad_body.exists() and good.exists()


def test_repair_removes_the_corrupt_entry_and_still_exits_1(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    good = make_entry(layout, "/good.jpg")
    bad = make_entry(layout, "/bad.jpg")
    bad_body = corrupt(bad)
    assert verify(layout.root, repair=True) == 1
    out = capsys.readouterr().out
    assert "removed" in out
    assert not bad.exists() and not bad_body.exists()  # the head and its body
    assert good.exists() and body_of(good).exists()
    # Nothing corrupt is left, not even an orphaned body: the next run is clean.
    assert verify(layout.root) == 0
    assert "orphan: " not in capsys.readouterr().out


def test_a_head_whose_body_is_missing_exits_1_and_repair_removes_it(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    good = make_entry(layout, "/good.jpg")
    bad = make_entry(layout, "/bad.jpg")
    body_of(bad).unlink()
    assert verify(layout.root) == 1
    out = capsys.readouterr().out
    assert f"corrupt: entries/{bad.name[:2]}/{bad.name}: missing body" in out
    assert bad.exists()
    assert verify(layout.root, repair=True) == 1
    assert "[removed]" in capsys.readouterr().out
    assert not bad.exists() and good.exists()
    assert verify(layout.root) == 0


def test_orphans_alone_exit_0_and_repair_removes_them(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    make_entry(layout, "/a.jpg")
    stray = layout.entries / "ab" / "leftover"
    stray.write_bytes(b"x")
    assert verify(layout.root) == 0
    assert "orphan: entries/ab/leftover" in capsys.readouterr().out
    assert stray.exists()
    assert verify(layout.root, repair=True) == 0
    assert not stray.exists()


def test_bodies_no_head_names_are_orphans_removed_only_once_old(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = make_entry(layout, "/kept.jpg")
    young, old = (body_of(make_entry(layout, f"/{age}.jpg")) for age in ("young", "old"))
    for body in (young, old):  # a crash between the body's rename and the head's
        layout.entry_path(body.name[:64]).unlink()
    then = time.time() - TEMP_GRACE - 60
    os.utime(old, (then, then))
    assert verify(layout.root) == 0
    out = capsys.readouterr().out
    for body in (young, old):
        assert f"orphan: bodies/{body.name[:2]}/{body.name}: body no entry names" in out
    assert young.exists() and old.exists()
    assert verify(layout.root, repair=True) == 0
    out = capsys.readouterr().out
    assert "left alone: younger than 1 h" in out
    assert young.exists() and not old.exists()
    assert kept.exists() and body_of(kept).exists()


def test_a_missing_setting_exits_2_naming_the_flag_and_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert verify(None) == 2
    err = capsys.readouterr().err
    assert "--cache-dir (PIXCACHE_CACHE_DIR)" in err
    assert "Traceback" not in err


def test_the_cache_dir_comes_from_the_environment(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_entry(layout, "/a.jpg")
    monkeypatch.setenv("PIXCACHE_CACHE_DIR", str(layout.root))
    assert verify(None) == 0
    assert str(layout.root) in capsys.readouterr().out


def test_the_flag_wins_over_the_environment(
    layout: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXCACHE_CACHE_DIR", str(tmp_path / "does-not-exist"))
    assert verify(layout.root) == 0


@pytest.mark.parametrize("what", ["missing", "a-file", "not-a-cache"])
def test_no_usable_cache_dir_exits_2(
    tmp_path: Path, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / what
    precious = tmp_path / "not-a-cache" / "precious.txt"
    precious.parent.mkdir()
    precious.write_bytes(b"keep")
    (tmp_path / "a-file").write_bytes(b"")
    assert verify(target, repair=True) == 2
    err = capsys.readouterr().err
    assert "--cache-dir (PIXCACHE_CACHE_DIR)" in err and str(target) in err
    assert precious.exists()


def test_an_unreadable_cache_dir_exits_2(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every directory")
    layout.root.chmod(0)
    try:
        assert verify(layout.root) == 2
    finally:
        layout.root.chmod(0o755)
    assert "cannot read" in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_progress_bar_is_drawn_only_on_a_terminal(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(3):
        make_entry(layout, f"/{i}.jpg")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert verify(layout.root) == 0
    drawn = terminal.getvalue()
    assert drawn.startswith("\r[") and "3/3 entries" in drawn and drawn.endswith("\n")
    assert "\r" not in capsys.readouterr().out  # the summary stays clean


def test_the_subcommand_parses_its_flags(layout: Layout) -> None:
    bad = make_entry(layout, "/bad.jpg")
    bad_body = corrupt(bad)
    root = argparse.ArgumentParser(prog="pixcache")
    verify_cmd.add_parser(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(["verify", "--cache-dir", str(layout.root), "--repair"])
    assert (args.command, args.repair) == ("verify", True)
    assert verify_cmd.run(args) == 1
    assert not bad.exists() and not bad_body.exists()
