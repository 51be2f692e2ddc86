"""`pixcache warm FILE`: a command-line client of POST /warm. FILE holds one request path
per line (or a URL of the cache, of which the path and query are taken; the origin always
comes from the instance's configuration); blank lines and lines starting with # are skipped.

Every line is checked before anything is sent; a bad one is named by file and line number.
On a TTY a progress bar runs on stderr; the summary line goes to stdout either way."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from typing import TextIO
from urllib.parse import urlsplit

import aiohttp

from proxy.purge_cmd import DEFAULT_ADMIN, instances_of
from proxy.warm import MOST_PATHS, path_problem

BAR_WIDTH = 30


class BadLine(Exception):
    pass


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("warm", help="fill a list of paths into the cache ahead")
    parser.add_argument("file", help="file of request paths, one per line ('-': stdin)")
    parser.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="VALUE",
        help="warm each path once per Accept value given (repeatable; default: no Accept)",
    )
    parser.add_argument(
        "--refresh", action="store_true", help="fetch again entries that are stale (soft-purged)"
    )
    parser.add_argument(
        "--instances",
        default=os.environ.get("PIXCACHE_ADMIN_INSTANCES", DEFAULT_ADMIN),
        help="comma-separated admin HOST:PORT list, or @FILE with one per line; each is "
        f"warmed with the whole list [PIXCACHE_ADMIN_INSTANCES] (default {DEFAULT_ADMIN})",
    )
    return parser


def read_paths(stream: TextIO, name: str) -> list[str]:
    """The paths of a warm list; BadLine names the first bad line."""
    paths = []
    for number, raw in enumerate(stream, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("http://", "https://")):
            parts = urlsplit(line)
            line = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        problem = path_problem(line)
        if problem:
            raise BadLine(f"{name}:{number}: {raw.strip()!r} {problem}")
        paths.append(line)
    if not paths:
        raise BadLine(f"{name}: no paths to warm")
    return paths


def run(args: argparse.Namespace) -> int:
    instances = instances_of(args.instances)
    if instances is None:
        return 2
    try:
        if args.file == "-":
            paths = read_paths(sys.stdin, "<stdin>")
        else:
            with open(args.file, encoding="utf-8") as stream:
                paths = read_paths(stream, args.file)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"pixcache warm: cannot read {args.file!r}: {exc}", file=sys.stderr)
        return 2
    except BadLine as exc:
        print(f"pixcache warm: {exc}", file=sys.stderr)
        return 2
    token = os.environ.get("PIXCACHE_ADMIN_TOKEN")
    failed = 0
    for instance in instances:
        failed += asyncio.run(_warm(instance, paths, args.accept, args.refresh, token))
    return 1 if failed else 0


async def _warm(
    instance: str, paths: list[str], accepts: list[str], refresh: bool, token: str | None
) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    progress = Progress(len(paths) * max(1, len(accepts)), sys.stderr.isatty())
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as client:
        for start in range(0, len(paths), MOST_PATHS):
            body = {"paths": paths[start : start + MOST_PATHS], "refresh": refresh}
            if accepts:
                body["accept"] = accepts
            try:
                async with client.post(f"http://{instance}/warm", json=body) as resp:
                    if resp.status != 200:
                        progress.done()
                        print(f"{instance}: FAILED {resp.status} {(await resp.text()).strip()}")
                        return 1
                    async for line in resp.content:
                        progress.take(json.loads(line))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                progress.done()
                print(f"{instance}: FAILED {exc!r}")
                return 1
    progress.done()
    print(f"{instance}: {progress.summary()}")
    return 1 if progress.counts["failed"] else 0


class Progress:
    def __init__(self, total: int, tty: bool) -> None:
        self.total = total
        self.tty = tty
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()

    def take(self, item: dict) -> None:
        result = item.get("result")
        if result is None:
            return  # the total line and the per-batch summary: counted from the outcomes
        self.counts[result] += 1
        if item.get("reason"):
            self.reasons[f"{result}: {item['reason']}"] += 1
        if self.tty:
            finished = sum(self.counts.values())
            filled = BAR_WIDTH * finished // max(1, self.total)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            sys.stderr.write(f"\r[{bar}] {finished}/{self.total} {self._counts()}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")

    def _counts(self) -> str:
        names = ("filled", "refreshed", "cached", "failed", "skipped")
        words = {"cached": "already cached"}
        return ", ".join(f"{self.counts[name]} {words.get(name, name)}" for name in names)

    def summary(self) -> str:
        text = f"{sum(self.counts.values())} warmed: {self._counts()}"
        if self.reasons:
            text += " (" + "; ".join(f"{r} x{n}" for r, n in sorted(self.reasons.items())) + ")"
        return text
