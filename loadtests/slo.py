"""SLO thresholds against locust's stats: one line per missed SLO. Pure apart from reading the file."""

from __future__ import annotations

from pathlib import Path

import yaml
from locust.stats import StatsEntry


def load_slos(path: str | Path) -> dict:
    data = yaml.safe_load(Path(path).read_text()) or {}
    return {"overall": data.get("overall") or {}, "classes": data.get("classes") or {}}


def _merged(stats, prefix: str) -> StatsEntry:
    """All request names of one user class (by their name prefix), merged into one entry."""
    entry = StatsEntry(stats, prefix.strip(), "", use_response_times_cache=False)
    for (name, _method), e in stats.entries.items():
        if name.startswith(prefix):
            entry.extend(e)
    return entry


def _missed(what: str, entry: StatsEntry, slo: dict) -> list[str]:
    out = []
    n, failed = entry.num_requests, entry.num_failures  # num_requests counts failures too
    if n < slo.get("min_requests", 1):
        return [f"{what}: {n} requests, fewer than the {slo.get('min_requests', 1)} required"]
    if "p99_ms" in slo:
        p99 = entry.get_response_time_percentile(0.99)
        if p99 > slo["p99_ms"]:
            out.append(f"{what} p99 {p99:.0f} ms > {slo['p99_ms']} ms")
    if "failure_ratio" in slo and n:
        ratio = failed / n
        if ratio > slo["failure_ratio"]:
            out.append(f"{what} failure ratio {ratio:.4f} ({failed} of {n}) > {slo['failure_ratio']}")
    return out


def check_slos(stats, slos: dict, prefixes: dict[str, str]) -> list[str]:
    """Missed SLOs, one line each. `prefixes`: user class -> the prefix of its request names."""
    missed = []
    for cls, slo in slos["classes"].items():
        if cls not in prefixes:
            missed.append(f"{cls}: no such user class in the locustfile")
            continue
        missed += _missed(cls, _merged(stats, prefixes[cls]), slo)
    if slos["overall"]:
        missed += _missed("overall", stats.total, slos["overall"])
    return missed


def summary(stats, prefixes: dict[str, str]) -> list[str]:
    """One line per user class and overall: requests, req/s, p50, p99, failure ratio."""
    entries = [(cls, _merged(stats, prefix)) for cls, prefix in prefixes.items()] + [("overall", stats.total)]
    lines = []
    for what, e in entries:
        n = e.num_requests
        lines.append(f"{what}: {n} requests, {stats.total.total_rps * n / max(stats.total.num_requests, 1):.1f} req/s, "
                     f"p50 {e.get_response_time_percentile(0.5):.0f} ms, p99 {e.get_response_time_percentile(0.99):.0f} ms, "
                     f"failure ratio {e.num_failures / n if n else 0:.4f}")
    return lines
