"""Run the public HTTP caching test suite (npm package http-cache-tests) against pixcache
in reverse-proxy mode, on loopback only, and summarise the results by kind of check.

    python -m bench.conformance.run [--keep DIR | --suite DIR] [--json FILE] [-- pixcache flags...]

--suite uses an unpacked suite (say a copy of the current upstream tree, `npm install` done)
instead of installing the npm release; the release's layout and the newer one with everything
under test-engine/ both work. Needs node and npm. The suite's origin server is made to listen
on 127.0.0.1 only (a preloaded module), pixcache runs in front of it, and the suite's client
talks to pixcache.
A test whose dependency failed is not counted, as on the suite's own result pages."""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.system.procs import free_port, stop, wait_for_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGE = "http-cache-tests@0.4.5"


def install(workdir: Path) -> Path:
    suite = workdir / "node_modules" / "http-cache-tests"
    if not suite.exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(workdir), PACKAGE],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return suite


def entry_points(suite: Path) -> tuple[str, str]:
    """The origin server and the CLI: at the top in 0.4.5, under test-engine/ in newer trees."""
    engine = "test-engine/" if (suite / "test-engine").is_dir() else ""
    return f"{engine}server/server.mjs", f"{engine}cli.mjs"


def summarise(results: dict, kinds: dict) -> tuple[dict, list]:
    def passed(test_id: str) -> bool:
        return results.get(test_id) is True

    def dependencies_passed(test_id: str) -> bool:
        deps = kinds.get(test_id, {}).get("depends", [])
        return all(passed(d) and dependencies_passed(d) for d in deps)

    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    for test_id, outcome in results.items():
        kind = kinds.get(test_id, {}).get("kind", "required")
        if not dependencies_passed(test_id):
            by_kind[kind]["dependency failed"] += 1
            continue
        by_kind[kind]["pass" if outcome is True else "fail"] += 1
        if outcome is not True and kind == "required":
            failures.append((test_id, outcome))
    return by_kind, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, help="install the suite here and keep it")
    parser.add_argument("--suite", type=Path, help="use this unpacked suite; install nothing")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("pixcache_flags", nargs="*", help="extra flags for pixcache serve")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="pixcache-conformance-"))
    suite = args.suite.resolve() if args.suite else install(workdir)
    server, cli = entry_points(suite)
    kinds = json.loads(
        subprocess.run(
            ["node", str(HERE / "kinds.mjs"), str(suite)], check=True, capture_output=True
        ).stdout
    )
    origin_port, proxy_port = free_port(), free_port()
    env = {
        **os.environ,
        "npm_config_port": str(origin_port),
        "npm_package_config_protocol": "http",
        "npm_config_pidfile": str(workdir / "server.pid"),
    }
    origin = subprocess.Popen(
        ["node", "--import", str(HERE / "listen-loopback.mjs"), server],
        cwd=suite,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    cache_dir = Path(tempfile.mkdtemp(prefix="pixcache-conformance-cache-"))
    proxy = subprocess.Popen(
        [
            sys.executable, "-m", "proxy", "serve",
            "--origin", f"http://127.0.0.1:{origin_port}",
            "--listen", f"127.0.0.1:{proxy_port}",
            "--cache-dir", str(cache_dir),
            "--log-level", "warning",
            "--admin-listen", f"127.0.0.1:{free_port()}",
            *args.pixcache_flags,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(origin_port, origin)
        wait_for_port(proxy_port, proxy)
        began = time.monotonic()
        client = subprocess.run(
            ["node", "--no-warnings", cli],
            cwd=suite,
            env={**env, "npm_config_base": f"http://127.0.0.1:{proxy_port}",
                 "npm_package_config_id": ""},
            capture_output=True,
            timeout=900,
            check=True,
        )  # fmt: skip
        elapsed = time.monotonic() - began
    finally:
        stop(proxy)
        stop(origin)
    results = json.loads(client.stdout)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    by_kind, failures = summarise(results, kinds)
    print(f"{len(results)} tests in {elapsed:.0f} s")
    for kind in ("required", "optimal", "check"):
        counts = by_kind[kind]
        counted = counts["pass"] + counts["fail"]
        share = 100 * counts["pass"] / counted if counted else 0
        print(
            f"{kind:9} pass {counts['pass']:3}  fail {counts['fail']:3}  "
            f"dependency failed {counts['dependency failed']:3}  -> {share:.1f}% pass"
        )
    for test_id, outcome in sorted(failures):
        print(f"  required failure: {test_id}: {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
