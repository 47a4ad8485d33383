"""The probes of meshspec's chaos experiments, for their steady-state hypotheses: each answers
True or False (the experiments' tolerance is `true`) and writes the figures it judged to the run's
`verdicts.jsonl`, which the verdict line and the report show.

Before the method no load has run: a probe then checks the mesh as it stands (a short burst on the
route, every server in rotation); after it, the probe judges what the run recorded."""

from __future__ import annotations

import hashlib
import json
import time

import httpx

from meshspec.chaos.figures import (
    judge_jobs,
    judge_rotation,
    judge_sessions,
    judge_sessions_kept,
    judge_traffic,
    load_totals,
    read_jsonl,
    rotation_windows,
)
from meshspec.chaos.run import ENQUEUE, RESULTS, current
from meshspec.common.consul_token import read_token
from meshspec.render.haproxy import backend_name
from meshspec.runtime.probes.mcp import probe_mcp
from meshspec.runtime.proxy.runtime_api import RuntimeApi

BURST = 20  # requests of the check before the method


def _verdict(probe: str, ok: bool, figures: dict) -> bool:
    with open(current().file("verdicts.jsonl"), "a") as out:
        out.write(json.dumps({"probe": probe, "ok": ok, "figures": figures, "t": time.time()}) + "\n")
    return ok


def _records(name: str) -> list[dict]:
    path = current().file(name)
    return read_jsonl(path.read_text()) if path.exists() else []


def _out_of_rotation(services: list[str]) -> list[str]:
    """The planned servers of `services` that HAProxy has not up and ready now."""
    run = current()
    api = RuntimeApi(run.mesh.plan.proxy_runtime)
    out = []
    for service in services:
        inside = {s.name for s in api.servers_state(backend_name(service)) if s.in_rotation}
        out += [i.id for i in run.mesh.plan.instances_of(service) if i.id not in inside]
    return sorted(out)


def traffic_held(routes: list[dict[str, str]], max_error_ratio: float, max_p99_ms: float) -> bool:
    """Under the run's route load: the ratio of failed requests (not 200, or without the route's
    `expect`) and Locust's p99 stay within bounds. Before any load: a burst of requests on each
    route, all answered by the service (the first refusals are named). (MCP sessions are judged by
    sessions_held and sessions_kept.)"""
    run = current()
    stats = run.file("load_stats.csv")
    if "load" not in run.loads or not stats.exists():
        refused = []
        with httpx.Client(trust_env=False, timeout=5, headers=run.edge_headers()) as client:
            for route in routes:
                for _ in range(BURST):
                    answer = client.get(run.proxy_url + route["path"])
                    if answer.status_code != 200 or route["expect"] not in answer.text:
                        refused.append(f"{route['path']}: HTTP {answer.status_code}")
        asked = BURST * len(routes)
        return _verdict("traffic_held (before)", not refused,
                        {"requests": asked, "answered": asked - len(refused), "first_refused": sorted(set(refused))[:3]})
    ok, figures = judge_traffic(load_totals(stats.read_text()), max_error_ratio, max_p99_ms)
    return _verdict("traffic_held", ok, figures)


def rotation_held(service: str, replica: int, max_out_s: float, back_within_s: float) -> bool:
    """After the fault: the faulted replica left the proxy's rotation within `max_out_s` and was back
    within `back_within_s` of the fault's end, and no other server left it. Before: every planned
    server of the service is in rotation."""
    run = current()
    instance = next(i.id for i in run.mesh.plan.instances_of(service) if i.replica == replica)
    faults = _records("faults.jsonl")
    if not faults:
        out = _out_of_rotation([service])
        return _verdict("rotation_held (before)", not out, {"out_of_rotation": out})
    deadline = faults[-1]["end"] + back_within_s
    while time.time() < deadline:  # the watcher may not have seen it come back yet
        if run.watcher and run.watcher.seen.get(instance):
            break
        time.sleep(0.2)
    ok, figures = judge_rotation(_records("rotation.jsonl"), faults, instance, max_out_s, back_within_s)
    return _verdict("rotation_held", ok, figures)


def rotation_steady(services: list[str]) -> bool:
    """No server of the `services` (the load's watched backends) left the proxy's rotation during
    the run: no health flap. Before the method: each planned server is in rotation."""
    run = current()
    faults = _records("faults.jsonl")
    if not faults:
        out = _out_of_rotation(services)
        return _verdict("rotation_steady (before)", not out, {"out_of_rotation": out})
    flaps = sorted(rotation_windows(_records("rotation.jsonl"), run.load_started or faults[0]["start"]))
    watched = sum(len(run.mesh.plan.instances_of(s)) for s in services)
    return _verdict("rotation_steady", not flaps, {"servers_watched": watched, "left_rotation": flaps})


def kv_held(prefix: str, count: int) -> bool:
    """Every key the run wrote under `prefix` (write_kv), each acknowledged, reads back as written.
    Before the method nothing was written: the registry answers a read."""
    run = current()
    client = run.mesh.registry.client(read_token(run.mesh.plan.layout.consul_token_file), 5)
    written = run.file("kv.json")
    if not written.exists():
        client.kv.get(prefix, recurse=True)
        return _verdict("kv_held (before)", True, {"registry": run.mesh.registry.addr})
    acknowledged = json.loads(written.read_text())
    _, found = client.kv.get(prefix, recurse=True)
    stored = {e["Key"]: e["Value"].decode() for e in found or []}
    lost = sorted(k for k, v in acknowledged.items() if stored.get(k) != v)
    return _verdict("kv_held", not lost and len(acknowledged) == count,
                    {"acknowledged": len(acknowledged), "lost": len(lost), "first_lost": lost[:3]})


def _session_answers(service: str) -> tuple[bool, dict]:
    """Before the method: an MCP session of `service` through the proxy's edge lists its tools (the
    checker's own probe, which names the server that answered)."""
    run = current()
    result = probe_mcp(f"{run.proxy_url}/mcp/{service}", timeout=10, headers=run.edge_headers())
    return result.ok, {"server": result.server_name, "tools": result.tool_count, "reason": result.reason}


def sessions_held(service: str, replica: int) -> bool:
    """After the fault: each MCP session the killed replica held (record_sessions) ended cleanly, a
    404, and its user opened another; the sessions of the other replicas went on untouched; no
    request failed. Before: a session through the proxy lists the service's tools."""
    run = current()
    if not run.file("owners.json").exists():
        return _verdict("sessions_held (before)", *_session_answers(service))
    killed = next(i.id for i in run.mesh.plan.instances_of(service) if i.replica == replica)
    owners = json.loads(run.file("owners.json").read_text())
    ok, figures = judge_sessions(_records("sessions.jsonl"), owners, killed, _records("faults.jsonl")[0]["start"])
    return _verdict("sessions_held", ok, figures)


def sessions_kept(service: str) -> bool:
    """After the faults: no MCP session ended and none failed (a reload keeps the proxy's stick
    table, so each session still reaches its server). Before: a session lists the tools."""
    if not _records("faults.jsonl"):
        return _verdict("sessions_kept (before)", *_session_answers(service))
    ok, figures = judge_sessions_kept(_records("sessions.jsonl"))
    return _verdict("sessions_kept", ok, figures)


def jobs_held(within_s: float = 60) -> bool:
    """After the fault: every job backend-api acknowledged (enqueue_jobs) is done within `within_s`,
    once (one row per job id, its result the sleep it ran). Before: one sha256 job comes back with
    its digest through the proxy."""
    run = current()
    with httpx.Client(trust_env=False, timeout=10, headers=run.edge_headers()) as client:
        if not run.file("jobs.json").exists():
            data = f"chaos {run.started}"
            job = client.post(run.route_url("backend-api", ENQUEUE), json={"kind": "sha256", "payload": {"data": data}})
            digest, result = hashlib.sha256(data.encode()).hexdigest(), {}
            deadline = time.time() + within_s
            while job.status_code == 202 and result.get("status") not in ("done", "failed") and time.time() < deadline:
                time.sleep(0.2)
                result = client.get(run.route_url("backend-api", RESULTS + job.json()["id"])).json()
            ok = digest in json.dumps(result.get("result"))
            return _verdict("jobs_held (before)", ok, {"enqueue": job.status_code, "status": result.get("status")})
        acknowledged = json.loads(run.file("jobs.json").read_text())
        results: dict[str, dict] = {}
        deadline = time.time() + within_s
        while time.time() < deadline:
            for job_id in acknowledged:
                if results.get(job_id, {}).get("status") not in ("done", "failed"):
                    answer = client.get(run.route_url("backend-api", RESULTS + job_id))
                    if answer.status_code == 200:
                        results[job_id] = answer.json()
            if all(r.get("status") in ("done", "failed") for r in results.values()) and len(results) == len(acknowledged):
                break
            time.sleep(0.5)
    ok, figures = judge_jobs(acknowledged, results)
    return _verdict("jobs_held", ok, figures)
