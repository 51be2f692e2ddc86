"""`pixcache purge`: a command-line client of the admin listener, fanned out to every
instance given (several pixcache instances behind consistent hashing each hold a share)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import aiohttp

DEFAULT_ADMIN = "127.0.0.1:8081"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("purge", help="purge cached entries through the admin API")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "url",
        nargs="?",
        help="the request path to purge, e.g. /img/a.jpg?w=300; each instance keys it by its "
        "own rule (--sort-query-params, --drop-query-params; docs/cache-key.md)",
    )
    what.add_argument("--prefix", help="purge every entry whose path starts with this")
    what.add_argument("--tag", help="purge every entry tagged so (Surrogate-Key)")
    what.add_argument(
        "--source",
        help="purge every derivative of this source image URL (needs --source-grammar)",
    )
    parser.add_argument("--soft", action="store_true", help="mark stale instead of removing")
    parser.add_argument(
        "--instances",
        default=os.environ.get("PIXCACHE_ADMIN_INSTANCES", DEFAULT_ADMIN),
        help="comma-separated admin HOST:PORT list, or @FILE with one per line "
        f"[PIXCACHE_ADMIN_INSTANCES] (default {DEFAULT_ADMIN})",
    )
    return parser


def _instances(spec: str) -> list[str]:
    if spec.startswith("@"):
        with open(spec[1:]) as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return [part.strip() for part in spec.split(",") if part.strip()]


def instances_of(spec: str) -> list[str] | None:
    """The admin listeners `--instances` names; None (and a message) when it names none."""
    try:
        instances = _instances(spec)
    except OSError as exc:
        print(f"pixcache: invalid setting --instances: {exc}", file=sys.stderr)
        return None
    if not instances:
        print("pixcache: invalid setting --instances: no instance given", file=sys.stderr)
        return None
    return instances


def run(args: argparse.Namespace) -> int:
    instances = instances_of(args.instances)
    if instances is None:
        return 2
    if args.url is not None:
        query = {"url": args.url}
    elif args.prefix is not None:
        query = {"prefix": args.prefix}
    elif args.source is not None:
        query = {"source": args.source}
    else:
        query = {"tag": args.tag}
    if args.soft:
        query["soft"] = "1"
    token = os.environ.get("PIXCACHE_ADMIN_TOKEN")
    return asyncio.run(_purge_all(instances, query, token))


async def _purge_all(instances: list[str], query: dict[str, str], token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    failures = 0
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as client:

        async def one(instance: str) -> None:
            nonlocal failures
            try:
                async with client.post(f"http://{instance}/purge", params=query) as resp:
                    text = await resp.text()
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, text = False, repr(exc)
            failures += not ok
            print(f"{instance}: {'ok' if ok else 'FAILED'} {text.strip()}")

        await asyncio.gather(*(one(instance) for instance in instances))
    return 1 if failures else 0
