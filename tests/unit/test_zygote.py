"""The zygote the system tests start their Python processes from (tests/zygote.py) gives
each the life a fresh `python -m` would have: its arguments, directory, environment,
session and standard streams, no descriptor of anybody else's, and its exit status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.zygote import run_python, start_python

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def zygote_even_when_exec_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIXCACHE_TESTS_EXEC", raising=False)


def _report(proc) -> dict:  # noqa: ANN001 - a ZygoteProcess
    return json.loads(proc.stdout.readline())


def test_a_child_runs_its_module_as_main_with_its_own_arguments_place_and_environment(
    tmp_path: Path,
) -> None:
    env = dict(os.environ, ZYGOTE_PROBE="here", PYTHONPATH=str(REPO))  # cwd is elsewhere
    proc = start_python(
        ["tests.zygote_probe", "3"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    report = _report(proc)
    assert proc.wait(10) == 3 and proc.returncode == 3
    assert report["argv"] == ["3"] and report["name"] == "__main__"
    assert report["cwd"] == str(tmp_path) and report["marker"] == "here"
    assert report["session"] is True
    assert report["fds"] == [0, 1, 2, 3]  # the three streams, and listdir's own


def test_a_child_outside_a_new_session_stays_in_ours() -> None:
    proc = start_python(["tests.zygote_probe", "0"], cwd=REPO, stdout=subprocess.PIPE)
    assert _report(proc)["session"] is False
    assert proc.wait(10) == 0


def test_a_signalled_child_reports_the_signal_and_is_never_signalled_again() -> None:
    proc = start_python(["tests.zygote_probe", "wait"], cwd=REPO, stdout=subprocess.PIPE)
    _report(proc)
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.2)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    assert proc.poll() == -signal.SIGKILL
    proc.send_signal(signal.SIGTERM)  # reaped: Popen sends nothing then, nor do we


def test_poll_sees_an_exit_without_waiting() -> None:
    proc = start_python(["tests.zygote_probe", "5"], cwd=REPO, stdout=subprocess.PIPE)
    _report(proc)
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:  # poll returns at once
        pass
    assert proc.returncode == 5


def test_run_python_captures_both_streams_as_text_and_the_exit_code(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = run_python(["tests.zygote_probe", "7"], cwd=tmp_path, env=env, timeout=30)
    assert done.returncode == 7
    assert json.loads(done.stdout)["cwd"] == str(tmp_path)
    assert done.stderr == "and a line\nfor stderr\n"


def test_run_python_kills_what_outlives_its_timeout() -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_python(["tests.zygote_probe", "wait"], cwd=REPO, timeout=0.5)


def test_a_module_is_found_where_a_fresh_python_finds_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = run_python(["tests.zygote_probe", "0"], cwd=tmp_path, env=env, timeout=30)
    assert done.returncode == 1 and "No module named 'tests'" in done.stderr
