"""The machine, the revision and the summary table of a benchmark run."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.probes import GIB, KIB, MIB

REPO = Path(__file__).resolve().parents[1]


def revision() -> dict[str, Any]:
    """The commit measured, and whether proxy/ or storage/ differed from it."""

    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(REPO), *argv], capture_output=True, text=True, timeout=10
            )
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    dirty = git("status", "--porcelain", "--", "proxy", "storage")
    return {
        "commit": git("rev-parse", "HEAD"),
        "code_modified": bool(dirty) if dirty is not None else None,
    }


def machine() -> dict[str, Any]:
    mem = proc_status_meminfo()
    wrk = shutil.which("wrk")
    wrk_version = None
    if wrk:
        # wrk --version prints its banner and usage, then exits 1.
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=5)
        wrk_version = (done.stdout + done.stderr).splitlines()[0].split(" [")[0]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gib": round(mem / GIB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": metadata.version("aiohttp"),
        "uvloop": metadata.version("uvloop"),
        "wrk": wrk_version,
    }


def proc_status_meminfo() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * KIB
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def summary(results: dict[str, Any]) -> str:
    out = []
    if "hits" in results:
        rows = [["object", "req/s", "p50 ms", "p99 ms", "origin reqs", "pixcache CPU", "wrk CPU"]]
        rows[0].append("pixcache CPU/req")
        for path, r in results["hits"]["objects"].items():
            rows.append(
                [
                    f"{path} ({size_text(r['size'])})",
                    f"{r['requests_per_s']:.0f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    str(r["origin_requests"]),
                    f"{r['pixcache_cpu']:.2f}",
                    f"{r['wrk_cpu']:.2f}",
                    f"{r['pixcache_cpu_us_per_request']} us",
                ]
            )
        out.append("hits (wrk; CPU in cores)\n" + table(rows))
    if "cold" in results:
        r = results["cold"]
        rows = [
            ["cold key", "value"],
            ["clients x size", f"{r['clients']} x {size_text(r['size'])}"],
            ["origin delay", f"{r['origin_delay_s']} s"],
            ["origin requests", str(r["origin_requests"])],
            ["wall time, all done", f"{r['wall_s'] * 1e3:.0f} ms"],
            [
                "first byte min/max",
                f"{_ms(r['first_byte_min_s'])} / {_ms(r['first_byte_max_s'])}",
            ],
            [
                "per request min/p50/max",
                f"{r['latency_min_s'] * 1e3:.0f} / {r['latency_p50_s'] * 1e3:.0f} / "
                f"{r['latency_max_s'] * 1e3:.0f} ms",
            ],
            ["statuses", json.dumps(r["statuses"])],
            [
                "bodies identical, correct",
                f"{r['distinct_bodies'] == 1}, {r['all_bodies_correct']}",
            ],
            ["outcomes", json.dumps(r["outcomes"])],
        ]
        out.append(table(rows))
    if "rss" in results:
        r = results["rss"]
        rows = [
            ["rss (pixcache)", "value"],
            ["object", f"{size_text(r['size'])}, cold then hit"],
            ["RSS idle / before", f"{r['rss_idle_mib']} / {r['rss_before_mib']} MiB"],
            [
                "RSS peak (cold/commit/hit)",
                f"{r['rss_peak_cold_mib']} / "
                f"{r['rss_peak_commit_mib']} / {r['rss_peak_hit_mib']} MiB",
            ],
            ["RSS rise (peak - before)", f"{r['rss_rise_mib']} MiB"],
            ["VmHWM before / after", f"{r['vmhwm_before_mib']} / {r['vmhwm_after_mib']} MiB"],
            ["VmHWM after - RSS before", f"{r['vmhwm_rise_mib']} MiB"],
            ["samples, max gap", f"{r['samples']}, {r['sample_gap_max_ms']} ms"],
            ["cold read", f"{r['cold_s']} s ({r['cold_mib_per_s']} MiB/s)"],
            ["commit after last byte", f"{r['commit_wait_s']} s"],
            ["hit read", f"{r['hit_s']} s ({r['hit_mib_per_s']} MiB/s)"],
            *(
                [f"CPU s in {phase} read", ", ".join(f"{k} {v}" for k, v in used.items())]
                for phase, used in r["cpu_seconds"].items()
            ),
            ["origin requests", str(r["origin_requests"])],
        ]
        out.append(table(rows))
    loads = ", ".join(
        f"{name} {r['loadavg_1m'][0]:.1f} -> {r['loadavg_1m'][1]:.1f}"
        for name, r in results.items()
    )
    out.append(f"1-minute load average before -> after: {loads}")
    return "\n\n".join(out)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.0f} ms"


def size_text(n: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"
