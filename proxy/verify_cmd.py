"""`pixcache verify`: check every entry's size and checksum, find orphans, and with
`--repair` remove both. Exit status: 0 all good, 1 corruption found (even when repaired:
the disk or something else damaged data), 2 no usable cache directory."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from proxy.config import SETTINGS, ConfigError, merge_sources
from storage import TEMP_GRACE, NotACache, scan


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "verify",
        help="check every cached entry's checksum and find stray files",
        description="Read every entry of the cache, check its size and SHA-256, and list "
        "files no lookup will ever find. Exits 1 if any entry is corrupt.",
    )
    parser.add_argument(
        "--cache-dir", dest="cache_dir", help="directory of the disk cache [PIXCACHE_CACHE_DIR]"
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="remove corrupt entries and stray files (temp files only when older than "
        f"{TEMP_GRACE / 3600:g} h; they may belong to a running pixcache)",
    )
    return parser


def _cache_dir(args: argparse.Namespace) -> Path:
    """The flag, else PIXCACHE_CACHE_DIR: the same precedence and parsing as `serve`."""
    flags = {"cache_dir": getattr(args, "cache_dir", None)}
    raw = merge_sources(flags, os.environ, {}).get("cache_dir")
    if raw is None:
        raise ConfigError("cache_dir", "is required")
    path: Path = SETTINGS["cache_dir"]("cache_dir", raw)
    if not path.is_dir():
        raise ConfigError("cache_dir", f"{str(path)!r} is not a directory")
    return path


class ProgressBar:
    """A one-line bar redrawn with \\r, at most ten times a second: a million entries must
    not cost a million terminal writes."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        filled = self.WIDTH * done // total if total else self.WIDTH
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\r[{bar}] {done:,}/{total:,} entries")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def run(args: argparse.Namespace) -> int:
    try:
        cache_dir = _cache_dir(args)
    except ConfigError as exc:
        print(f"pixcache: {exc}", file=sys.stderr)
        return 2
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    try:
        summary = scan(cache_dir, repair=args.repair, progress=bar.update if bar else None)
    except NotACache as exc:
        print(f"pixcache: {ConfigError('cache_dir', str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = exc.filename or cache_dir
        print(f"pixcache verify: cannot read {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    print(summary.render())
    return 1 if summary.corrupt.count else 0
