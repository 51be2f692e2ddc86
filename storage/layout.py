"""Where things live in the cache directory. Names are hashes: no request text becomes a path."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

KEY_VERSION = b"pixcache/1\0"
# The first two hex digits of a key hash: the directory its files go in.
SHARDS = tuple(f"{i:02x}" for i in range(256))


def primary_key_hash(key: str) -> str:
    return hashlib.sha256(KEY_VERSION + key.encode("utf-8", "surrogateescape")).hexdigest()


def variant_key_hash(primary: str, vary_id: str, values: dict[str, str | None]) -> str:
    selector = json.dumps(sorted(values.items()), separators=(",", ":")).encode()
    return hashlib.sha256(f"{primary}\0{vary_id}\0".encode() + selector).hexdigest()


def body_name(key_hash: str, body_id: str) -> str:
    return f"{key_hash}.{body_id}"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def entries(self) -> Path:
        return self.root / "entries"

    @property
    def bodies(self) -> Path:
        return self.root / "bodies"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def lock_file(self) -> Path:
        return self.root / "locks"

    @property
    def upkeep_lock_file(self) -> Path:
        return self.root / "upkeep.lock"

    @property
    def purge_stamp(self) -> Path:
        """An empty file whose mtime is the time of the latest purge, in any worker."""
        return self.root / "purged"

    @property
    def index_file(self) -> Path:
        return self.root / "index.sqlite3"

    def entry_path(self, key_hash: str) -> Path:
        """The entry's head: its metadata, naming its body."""
        return self.entries / key_hash[:2] / key_hash

    def body_path(self, key_hash: str, body_id: str) -> Path:
        return self.bodies / key_hash[:2] / body_name(key_hash, body_id)

    @classmethod
    def of_entry(cls, head: Path) -> Layout:
        """The layout a head path (entries/ab/<hash>) belongs to."""
        return cls(head.parent.parent.parent)

    def create(self) -> None:
        """Make every directory an entry can land in, so the commit never has to."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        for top in (self.entries, self.bodies):
            top.mkdir(exist_ok=True)
            for name in SHARDS:  # 512 of them at every start: plain strings, not Paths
                with contextlib.suppress(FileExistsError):
                    os.mkdir(f"{top}/{name}")

    def check_writable(self) -> None:
        """Raise OSError unless a file can be created and removed in the temp directory."""
        probe = self.tmp / f".probe-{os.getpid()}"
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        os.close(fd)
        os.unlink(probe)

    def sweep_temp_files(self, pid: int | None = None) -> int:
        """Remove temp files a crash left behind; returns how many. Called once at start
        (all of them), and when a worker died (only that process's, named by its pid)."""
        removed = 0
        pattern = "*" if pid is None else f"{pid}-*"
        for path in self.tmp.glob(pattern):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed
