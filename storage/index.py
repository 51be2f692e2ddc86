"""Sizes, last use and expiry of every entry, shared by all worker processes.

SQLite in WAL mode: each process has its own connection, transactions serialise writers
across processes, and a crash loses at most the last uncommitted transaction. The index is
advice for eviction, never the truth about what is stored: lookups read the entry files,
and `reconcile` repairs the index from the files at start.

Every method here blocks; the store calls them on its one index thread."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    used REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_use ON entries (used);
CREATE TABLE IF NOT EXISTS entry_paths (
    key TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    tags TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entry_paths_by_path ON entry_paths (path);
CREATE TABLE IF NOT EXISTS purges (
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS purges_by_time ON purges (at);
CREATE INDEX IF NOT EXISTS entries_by_expiry ON entries (expires);
"""


# How long a connection waits for another process's lock before it gives up.
BUSY_SECONDS = 30.0


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """PRAGMA journal_mode=WAL. While another worker switches a new index file to WAL,
    SQLite answers SQLITE_BUSY at once, without waiting its busy timeout (workers started
    together on a new cache directory): try again until that timeout has passed."""
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.005)


class Index:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        # Opened lazily, so that each worker process (and each thread) makes its own.
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
            _switch_to_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            self._db = db
        return self._db

    def add(
        self,
        key: str,
        size: int,
        used: float,
        expires: float,
        path: str = "",
        tags: tuple[str, ...] = (),
    ) -> None:
        """Index an entry: its size, use and expiry for eviction; its request path and
        tags (Surrogate-Key) for purging."""
        self.add_many([(key, size, used, expires, path, tags)])

    def add_many(self, rows: list[tuple[str, int, float, float, str, tuple[str, ...]]]) -> None:
        """`add` for several entries (key, size, used, expires, path, tags), in one
        transaction."""
        db = self._conn()
        with _immediate(db):
            db.executemany(
                "INSERT OR REPLACE INTO entries (key, size, used, expires) VALUES (?, ?, ?, ?)",
                [row[:4] for row in rows],
            )
            db.executemany(
                "INSERT OR REPLACE INTO entry_paths (key, path, tags) VALUES (?, ?, ?)",
                [(row[0], row[4], " " + " ".join(row[5]) + " ") for row in rows],
            )

    def keys_under(self, prefix: str) -> list[str]:
        """Entries whose request path starts with `prefix` (all Vary variants included)."""
        rows = self._conn().execute(
            "SELECT key FROM entry_paths WHERE substr(path, 1, ?) = ?", (len(prefix), prefix)
        )
        return [key for (key,) in rows]

    def record_purge(self, kind: str, value: str, at: float) -> None:
        """Remember a purge, so that fills in flight in every process can see it."""
        db = self._conn()
        with _immediate(db):
            db.execute("INSERT INTO purges (at, kind, value) VALUES (?, ?, ?)", (at, kind, value))

    def purged_since(self, path: str, tags: tuple[str, ...], since: float) -> bool:
        """Whether a purge at or after `since` covers this path or one of these tags."""
        tag_words = " " + " ".join(tags) + " "
        row = (
            self._conn()
            .execute(
                "SELECT 1 FROM purges WHERE at >= ? AND ("
                " (kind = 'url' AND value = ?)"
                " OR (kind = 'prefix' AND substr(?, 1, length(value)) = value)"
                " OR (kind = 'tag' AND instr(?, ' ' || value || ' ') > 0)) LIMIT 1",
                (since, path, path, tag_words),
            )
            .fetchone()
        )
        return row is not None

    def forget_purges_before(self, at: float) -> None:
        db = self._conn()
        with _immediate(db):
            db.execute("DELETE FROM purges WHERE at < ?", (at,))

    def keys_at(self, path: str) -> list[str]:
        """Entries of exactly this request path: the entry, or a Vary marker and variants."""
        rows = self._conn().execute("SELECT key FROM entry_paths WHERE path = ?", (path,))
        return [key for (key,) in rows]

    def keys_tagged(self, tag: str) -> list[str]:
        rows = self._conn().execute(
            "SELECT key FROM entry_paths WHERE instr(tags, ?) > 0", (f" {tag} ",)
        )
        return [key for (key,) in rows]

    def touch(self, uses: Iterable[tuple[str, float]]) -> None:
        db = self._conn()
        with _immediate(db):
            db.executemany(
                "UPDATE entries SET used = max(used, ?) WHERE key = ?",
                [(used, key) for key, used in uses],
            )

    def remove(self, keys: Iterable[str]) -> None:
        db = self._conn()
        rows = [(k,) for k in keys]
        with _immediate(db):
            db.executemany("DELETE FROM entries WHERE key = ?", rows)
            db.executemany("DELETE FROM entry_paths WHERE key = ?", rows)

    def total_size(self) -> int:
        return int(self._conn().execute("SELECT coalesce(sum(size), 0) FROM entries").fetchone()[0])

    def count(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM entries").fetchone()[0])

    def take_least_recently_used(self, max_total: int, incoming: int = 0) -> list[str]:
        """Remove from the index, and return, the least recently used entries that must go
        so that the total plus `incoming` fits in `max_total`. One transaction, so two
        processes never pick the same victims or both skip eviction."""
        db = self._conn()
        with _immediate(db):
            total = int(db.execute("SELECT coalesce(sum(size), 0) FROM entries").fetchone()[0])
            return self._take_lru(db, total + incoming - max_total)

    def take_bytes(self, needed: int) -> list[str]:
        """Remove and return the least recently used entries whose sizes add up to at least
        `needed` bytes (fewer if the index holds less)."""
        db = self._conn()
        with _immediate(db):
            return self._take_lru(db, needed)

    @staticmethod
    def _take_lru(db: sqlite3.Connection, excess: int) -> list[str]:
        victims: list[str] = []
        if excess <= 0:
            return victims
        for key, size in db.execute("SELECT key, size FROM entries ORDER BY used"):
            victims.append(key)
            excess -= size
            if excess <= 0:
                break
        db.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in victims])
        return victims

    def take_expired(self, before: float, limit: int = 1000) -> list[str]:
        db = self._conn()
        with _immediate(db):
            rows = db.execute("SELECT key FROM entries WHERE expires < ? LIMIT ?", (before, limit))
            victims = [key for (key,) in rows]
            db.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in victims])
            return victims

    def keys(self) -> set[str]:
        return {key for (key,) in self._conn().execute("SELECT key FROM entries")}

    def close(self) -> None:
        """Close the connection (on the thread that opened it); a later call reopens it."""
        if self._db is not None:
            self._db.close()
            self._db = None


class _immediate:
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front, roll back on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
