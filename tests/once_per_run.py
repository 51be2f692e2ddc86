"""A result worked out once per test run, however many pytest-xdist workers ask for it.

A module-scoped fixture runs once per worker that gets one of the module's tests, and
--dist worksteal hands a module's tests to several workers: an expensive scenario (a whole
pixcache run on a tmpfs) ran four times. The first worker to ask works it out under a lock
in the run's shared temporary directory; the others read what it wrote."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable
from typing import Any

import pytest


def once_per_run(
    name: str, tmp_path_factory: pytest.TempPathFactory, worker_id: str, make: Callable[[], Any]
) -> Any:
    """make()'s result (JSON), from this run's first call of that name. A make() that
    raises (a failed or skipped scenario) leaves nothing behind: the next caller tries again."""
    if worker_id == "master":  # no xdist: the temp root is not this run's alone
        return make()
    root = tmp_path_factory.getbasetemp().parent
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / f"{name}.json"
        if done.exists():
            return json.loads(done.read_text())
        text = json.dumps(make())
        done.write_text(text)
        return json.loads(text)  # what the others read, to the last detail
