"""The tables of bench/compare.py: each target's figures, and the ratios the hit-path work
aims at, each with its target and whether this run met it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench.report import table

SIZES = {"1k": "1 KiB", "100k": "100 KiB", "1m": "1 MiB"}


@dataclass(frozen=True)
class Ratio:
    what: str
    value: float | None  # None: a figure it needs was not measured
    bound: str = ""  # "<= 2.0", ">= 1.8", or "" for a figure shown without a target

    def met(self) -> str:
        if self.value is None or not self.bound:
            return ""
        op, limit = self.bound.split()
        ok = self.value <= float(limit) if op == "<=" else self.value >= float(limit)
        return "yes" if ok else "NO"


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def _per_worker(rss: dict[str, Any]) -> float:
    return round(statistics.mean(rss["workers_mib"]), 1)


def ratios(results: dict[str, Any], main: str) -> list[Ratio]:
    hits, cold, herd = results.get("hits", {}), results.get("cold", {}), results.get("herd", {})

    def hit(name: str, size: str, figure: str) -> float | None:
        return hits.get(name, {}).get("sizes", {}).get(size, {}).get(figure)

    cpu, rps = "cpu_us_per_request", "requests_per_s"
    out = []
    for size, label in SIZES.items():
        bound = "<= 2.0" if size != "1m" else ""
        value = _div(hit(main, size, cpu), hit("aiohttp", size, cpu))
        out.append(Ratio(f"hit CPU/req, pixcache / aiohttp, {label}", value, bound))
    for size, label in SIZES.items():
        bound = "<= 1.0" if size == "1m" else ""
        value = _div(hit(main, size, cpu), hit("nginx", size, cpu))
        out.append(Ratio(f"hit CPU/req, pixcache / nginx, {label}", value, bound))
    for level, bound in (("warning", ">= 1.8"), ("info", "")):
        value = _div(hit(f"pixcache w2 {level}", "1k", rps), hit(f"pixcache w1 {level}", "1k", rps))
        out.append(Ratio(f"1 KiB hit req/s, workers 2 / workers 1 ({level})", value, bound))
    # Whether the second worker found a core to run on (wrk and other work share them).
    cores = "server_cores"
    value = _div(hit("pixcache w2 warning", "1k", cores), hit("pixcache w1 warning", "1k", cores))
    out.append(Ratio("1 KiB hit server cores used, workers 2 / workers 1 (warning)", value))
    coldv = {name: cold.get(name, {}) for name in (main, "nginx")}
    out.append(
        Ratio(
            "cold-miss req/s, pixcache / nginx",
            _div(coldv[main].get(rps), coldv["nginx"].get(rps)),
            ">= 1.0",
        )
    )
    out.append(
        Ratio(
            "cold CPU/miss, pixcache / nginx",
            _div(coldv[main].get(cpu), coldv["nginx"].get(cpu)),
            "<= 1.5",
        )
    )
    out.append(
        Ratio(
            "herd wall time, pixcache / nginx",
            _div(herd.get(main, {}).get("wall_s"), herd.get("nginx", {}).get("wall_s")),
            "<= 1.0",
        )
    )
    for workers in (1, 2):
        for size, label in SIZES.items():
            info = hit(f"pixcache w{workers} info", size, cpu)
            warning = hit(f"pixcache w{workers} warning", size, cpu)
            what = f"hit CPU/req, info / warning log level, w{workers}, {label}"
            out.append(Ratio(what, _div(info, warning), "<= 1.15"))
    for name in (*(n for n in hits if n.startswith("pixcache")), "aiohttp", "nginx"):
        if name in hits:
            value = _per_worker(hits[name]["rss"])
            out.append(Ratio(f"RSS per worker after the hits, {name} (MiB)", value))
    return out


def _hits_table(hits: dict[str, Any]) -> str:
    head = ["target"]
    for label in SIZES.values():
        head += [f"{label} req/s", "us/req"]
    rows = [[*head, "RSS/worker (master)"]]
    for name, r in hits.items():
        row = [name]
        for size in SIZES:
            f = r["sizes"].get(size)
            row += (
                [f"{f['requests_per_s']:.0f}", f"{f['cpu_us_per_request']:.0f}"] if f else ["-"] * 2
            )
        master = r["rss"]["master_mib"]
        row.append(f"{_per_worker(r['rss'])} MiB" + (f" ({master})" if master else ""))
        rows.append(row)
    return "hits (wrk; median of the runs; us/req = server CPU per request)\n" + table(rows)


def _cold_table(cold: dict[str, Any]) -> str:
    rows = [["target", "req/s", "us/miss", "p50 ms", "p99 ms", "misses", "stored", "RSS/worker"]]
    for name, r in cold.items():
        rows.append(
            [
                name,
                f"{r['requests_per_s']:.0f}",
                f"{r['cpu_us_per_request']:.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                str(r["misses"]),
                str(r["entries_stored"]),
                f"{_per_worker(r['rss_after'])} MiB",
            ]
        )
    return "cold misses (a new 100 KiB key per request)\n" + table(rows)


def _herd_table(herd: dict[str, Any]) -> str:
    rows = [["target", "wall, median", "each run", "clients"]]
    for name, r in herd.items():
        each = ", ".join(f"{w * 1e3:.0f}" for w in r["walls_s"])
        rows.append([name, f"{r['wall_s'] * 1e3:.0f} ms", f"{each} ms", str(r["clients"])])
    return "herd (concurrent GETs of one cold key; one origin request each time)\n" + table(rows)


def report(results: dict[str, Any], main: str, loads: list[float]) -> str:
    out = []
    if "hits" in results:
        out.append(_hits_table(results["hits"]))
    if "cold" in results:
        out.append(_cold_table(results["cold"]))
    if "herd" in results:
        out.append(_herd_table(results["herd"]))
    rows = [["ratio", "value", "target", "met"]]
    for r in ratios(results, main):
        if r.value is not None:
            rows.append([r.what, f"{r.value:g}", r.bound, r.met()])
    out.append(f"ratios (pixcache = {main} unless named)\n" + table(rows))
    out.append("1-minute load average: " + " -> ".join(f"{x:.2f}" for x in loads))
    return "\n\n".join(out)
