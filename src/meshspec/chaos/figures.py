"""What a run's records say (pure: text and events in, figures out), for the probes' verdicts and
the report's plots."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_totals(stats_csv: str) -> dict[str, float]:
    """Locust's totals (its `_stats.csv`, the Aggregated row): requests, failures, p50 and p99 in ms."""
    row = next((r for r in csv.DictReader(io.StringIO(stats_csv)) if r["Name"] == "Aggregated"), None)
    if row is None or not int(row["Request Count"]):
        return {"requests": 0, "failures": 0, "p50_ms": 0.0, "p99_ms": 0.0}
    return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
            "p50_ms": float(row["50%"]), "p99_ms": float(row["99%"])}


@dataclass(frozen=True)
class Second:
    """One second of the load: requests that ended in it (rate, failures) and the p50/p99 of those
    that began in it (a request stuck behind a fault shows at its start, with its whole wait)."""

    t: float
    rps: int
    fails: int
    p50: float | None
    p99: float | None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load_seconds(requests_csv: str) -> list[Second]:
    """Per-second bins of the request log (start,ms,answered), from the first request's second."""
    rows = [(float(s), float(ms), line.endswith("1")) for line in requests_csv.splitlines() if line.strip()
            for s, ms, _ in [line.split(",")]]
    if not rows:
        return []
    zero = int(min(r[0] for r in rows))
    last = int(max(r[0] + r[1] / 1000 for r in rows))
    ended: dict[int, list[bool]] = {}
    began: dict[int, list[float]] = {}
    for start, ms, ok in rows:
        ended.setdefault(int(start + ms / 1000), []).append(ok)
        began.setdefault(int(start), []).append(ms)
    return [Second(float(t), len(ended.get(t, [])), sum(not ok for ok in ended.get(t, [])),
                   _percentile(began.get(t, []), 0.5), _percentile(began.get(t, []), 0.99))
            for t in range(zero, last + 1)]


def judge_traffic(totals: dict[str, float], max_error_ratio: float, max_p99_ms: float) -> tuple[bool, dict]:
    ratio = totals["failures"] / totals["requests"] if totals["requests"] else 1.0
    figures = {**totals, "error_ratio": round(ratio, 6), "max_error_ratio": max_error_ratio, "max_p99_ms": max_p99_ms}
    return bool(totals["requests"]) and ratio <= max_error_ratio and totals["p99_ms"] <= max_p99_ms, figures


def rotation_windows(events: list[dict], since: float) -> dict[str, list[list[float | None]]]:
    """Each server's windows out of rotation that began at or after `since`: [[out, back or None]]."""
    windows: dict[str, list[list[float | None]]] = {}
    for e in sorted(events, key=lambda e: e["t"]):
        if e["t"] < since or e.get("first"):
            continue
        mine = windows.setdefault(e["server"], [])
        if not e["in"]:
            mine.append([e["t"], None])
        elif mine and mine[-1][1] is None:
            mine[-1][1] = e["t"]
    return {server: w for server, w in windows.items() if w}


def judge_rotation(events: list[dict], faults: list[dict], server: str, max_out_s: float,
                   back_within_s: float) -> tuple[bool, dict]:
    """The faulted server left rotation within `max_out_s` of its fault's start, and was back within
    `back_within_s` of its fault's end; no other server left it."""
    if not faults:
        return False, {"reason": "no fault was recorded"}
    start, end = faults[0]["start"], faults[-1]["end"]
    windows = rotation_windows(events, start)
    mine = windows.get(server, [])
    others = sorted(s for s in windows if s != server)
    out_after = round(mine[0][0] - start, 3) if mine else None
    back_after = round(mine[-1][1] - end, 3) if mine and mine[-1][1] is not None else None
    figures = {"server": server, "out_after_s": out_after, "back_after_s": back_after, "others_out": others,
               "max_out_s": max_out_s, "back_within_s": back_within_s}
    ok = out_after is not None and out_after <= max_out_s and back_after is not None \
        and back_after <= back_within_s and not others
    return ok, figures


def judge_sessions(events: list[dict], owners: dict[str, str], killed: str, fault: float) -> tuple[bool, dict]:
    """MCP sessions through a replica's death: every session of the load that the killed server held
    when the fault began (at `fault`; the stick table also keeps older sessions, of other clients)
    ended cleanly (its server forgot it: 404) and its user opened another; no session another server
    held ended; no request failed otherwise."""
    live = {e["session"] for e in events if e["event"] == "opened" and e["t"] < fault} \
        - {e["session"] for e in events if e["event"] == "ended" and e["t"] < fault}
    owners = {s: server for s, server in owners.items() if s in live}
    ended = {e["session"] for e in events if e["event"] == "ended"}
    failed = [e for e in events if e["event"] == "failed"]
    reopened = set()
    for e in events:
        if e["event"] == "ended" and any(o["event"] == "opened" and o["user"] == e["user"] and o["t"] > e["t"]
                                         for o in events):
            reopened.add(e["session"])
    on_killed = {s for s, server in owners.items() if server == killed}
    on_others = set(owners) - on_killed
    figures = {"killed": killed, "on_killed": len(on_killed), "ended_and_reopened": len(on_killed & reopened),
               "on_others": len(on_others), "others_ended": len(on_others & ended), "failed": len(failed),
               "first_failed": [e.get("detail", "") for e in failed[:3]]}
    ok = bool(on_killed) and on_killed <= reopened and bool(on_others) and not on_others & ended and not failed
    return ok, figures


def judge_sessions_kept(events: list[dict]) -> tuple[bool, dict]:
    """MCP sessions through faults that should cost none (reloads): no session ended, none failed."""
    opened = {e["session"] for e in events if e["event"] == "opened"}
    ended = [e for e in events if e["event"] == "ended"]
    failed = [e for e in events if e["event"] == "failed"]
    figures = {"sessions": len(opened), "ended": len(ended), "failed": len(failed),
               "first_failed": [e.get("detail", "") for e in failed[:3]]}
    return bool(opened) and not ended and not failed, figures


def judge_jobs(acknowledged: dict[str, float], results: dict[str, dict]) -> tuple[bool, dict]:
    """Every job backend-api acknowledged is done, once: its row (one per id) says done with the
    sleep it ran; `rerun` counts those claimed again after a redelivery (the worker died mid-job)."""
    done = {i for i, job in results.items() if job.get("status") == "done"
            and (job.get("result") or {}).get("slept_s", 0) >= acknowledged[i]}
    lost = sorted(set(acknowledged) - done)
    rerun = sum(1 for i in done if results[i].get("attempts", 1) > 1)
    figures = {"acknowledged": len(acknowledged), "done": len(done), "lost": len(lost), "rerun": rerun,
               "first_lost": [f"{i}: {results.get(i, {}).get('status', 'no row')}" for i in lost[:3]]}
    return bool(acknowledged) and not lost, figures
