"""The entry index of a new cache directory, opened by several workers at the same moment:
each of them gets it (SQLite answers "database is locked" at once, without waiting its busy
timeout, to a connection that switches a new database file to WAL while another does)."""

from __future__ import annotations

import threading
from pathlib import Path

from storage.index import Index


def test_workers_that_open_a_new_index_at_once_all_get_it(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    for round_no in range(40):
        path = tmp_path / f"index-{round_no}.sqlite3"
        start = threading.Barrier(4)

        def worker(number: int, path: Path = path, start: threading.Barrier = start) -> None:
            start.wait()
            index = Index(path)
            try:
                index.add(f"key-{number}", 100, 1.0, 2.0)
            except BaseException as exc:  # noqa: BLE001 - collected, asserted below
                failures.append(exc)
            finally:
                index.close()

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if not failures:
            assert Index(path).keys() == {f"key-{n}" for n in range(4)}
    assert not failures, failures[:3]
