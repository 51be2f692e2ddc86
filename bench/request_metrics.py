"""The metric work of N hot hits, alone, for a repeatable instruction count under callgrind:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench.request_metrics tally workers 20000

and the same with N = 0; the difference divided by N is the cost per hit. `direct` updates
the prometheus-client metrics on every hit (two counters and the histogram, as the hit path
did before metrics.RequestTally); `tally` adds to the tally and flushes it every 1000 hits
(the server flushes every FLUSH_SECONDS, thousands of hits under load). `workers` runs
prometheus-client in multiprocess mode (as `--workers 2` does), `one` without. Run by hand;
prints the wall time per hit too, which is noisier than the instruction count."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

FLUSH_EVERY = 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.request_metrics")
    parser.add_argument("how", choices=("direct", "tally"))
    parser.add_argument("processes", choices=("one", "workers"))
    parser.add_argument("hits", type=int, help="how many hits to record (0 to 1000000)")
    args = parser.parse_args(argv)
    if not 0 <= args.hits <= 1_000_000:
        parser.error("hits: from 0 to 1000000")
    with tempfile.TemporaryDirectory(prefix="pixcache-bench-metrics-") as directory:
        if args.processes == "workers":  # before prometheus-client creates a metric
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        from proxy import metrics

        seconds = [0.0002 + (i % 50) * 1e-5 for i in range(FLUSH_EVERY)]
        began = time.perf_counter()
        if args.how == "direct":
            requests = metrics.REQUESTS.labels("hit", "200")
            body_bytes = metrics.BYTES_SERVED.labels("cache")
            durations = metrics.REQUEST_SECONDS.labels("hit")
            for i in range(args.hits):
                requests.inc()
                body_bytes.inc(1024)
                durations.observe(seconds[i % FLUSH_EVERY])
        else:
            tally = metrics.TALLY
            # Outside an event loop a tally flushes at once; here it waits for the loop below.
            tally._due = True  # noqa: SLF001
            for i in range(args.hits):
                tally.add("hit", 200, True, 1024, seconds[i % FLUSH_EVERY])
                if i % FLUSH_EVERY == FLUSH_EVERY - 1:
                    tally.flush()
                    tally._due = True  # noqa: SLF001
            tally.flush()
        elapsed = time.perf_counter() - began
    if args.hits:
        print(f"{args.how} {args.processes}: {elapsed / args.hits * 1e6:.2f} us per hit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
