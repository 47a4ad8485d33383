"""The probes of meshspec's chaos experiments, for their steady-state hypotheses: each answers
True or False (the experiments' tolerance is `true`) and writes the figures it judged to the run's
`verdicts.jsonl`, which the verdict line and the report show.

Before the method no load has run: a probe then checks the mesh as it stands (a short burst on the
route, every server in rotation); after it, the probe judges what the run recorded."""

from __future__ import annotations

import json
import time

import httpx

from meshspec.chaos.figures import judge_rotation, judge_traffic, load_totals, read_jsonl, rotation_windows
from meshspec.chaos.run import current
from meshspec.common.consul_token import read_token
from meshspec.render.haproxy import backend_name
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


def _headers() -> dict[str, str]:
    key = current().api_key_file
    return {"X-API-Key": open(key).read().strip()} if key else {}


def traffic_held(routes: list[dict[str, str]], max_error_ratio: float, max_p99_ms: float) -> bool:
    """Under the run's load: the ratio of failed requests (not 200, or without the route's `expect`)
    and Locust's p99 stay within bounds. Before any load: a burst of requests on each route, all
    answered by the service (the first refusals are named)."""
    run = current()
    stats = run.file("load_stats.csv")
    if run.load is None or not stats.exists():
        refused = []
        with httpx.Client(trust_env=False, timeout=5, headers=_headers()) as client:
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
    flaps = sorted(rotation_windows(_records("rotation.jsonl"), run.load.started if run.load else faults[0]["start"]))
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
