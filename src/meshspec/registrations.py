"""Plan -> Consul service registrations (Consul's JSON field names). Pure.

`spec-hash` in Meta is the hash of everything else registered, so a deploy compares one
field to know whether a registration is as declared.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath

from meshspec import __version__
from meshspec.containers import container_name
from meshspec.plan import Instance, Plan
from meshspec.spec.resolve import effective_health_timing
from meshspec.spec.types import format_duration

MANAGED_BY = "meshspec"


def check(plan: Plan, inst: Instance, runtime: str = "process") -> dict:
    """The Consul check that proves the instance does its job. A command check runs where the
    instance runs: on the host, or (docker runtime) in its container, as Consul's docker check."""
    service = plan.service(inst.service)
    health, timing = service.health, effective_health_timing(plan.spec, service)
    base = f"http://{inst.address}:{inst.port}"
    if health.http:
        probe = {"HTTP": base + health.http.path, "Method": health.http.method,
                 "Header": {k: [v] for k, v in health.http.headers.items()}}
        probe |= {"Body": health.http.body} if health.http.body is not None else {}
    elif health.mcp:
        # meshspec-probe, beside meshspec: a lean entry point, as Consul starts it every interval.
        probe_bin = str(PurePosixPath(plan.meshspec_bin).with_name("meshspec-probe"))
        probe = {"Args": [probe_bin, "mcp", base + health.mcp.path,
                          "--min-tools", str(health.mcp.min_tools)]}
    elif health.tcp:
        probe = {"TCP": f"{inst.address}:{inst.port}"}
    else:
        probe = {"Args": [plan.render(inst, a) for a in health.command]}
        if runtime == "docker":
            probe |= {"DockerContainerID": container_name(plan, inst), "Shell": "/bin/sh"}
    timing_fields = {
        "Interval": format_duration(timing.interval),
        "Timeout": format_duration(timing.timeout),
        "SuccessBeforePassing": timing.success_before_passing,
        "FailuresBeforeCritical": timing.failures_before_critical,
    }
    if timing.deregister_critical_after is not None:
        timing_fields["DeregisterCriticalServiceAfter"] = format_duration(timing.deregister_critical_after)
    return {"CheckID": f"service:{inst.id}", "Name": f"{inst.service} {health.probe}", **probe, **timing_fields}


def registration(plan: Plan, inst: Instance, runtime: str) -> dict:
    service = plan.service(inst.service)
    meta = {
        **service.meta,
        "managed-by": MANAGED_BY,
        "mesh": plan.spec.mesh.name,
        "kind": service.kind,
        "runtime": runtime,
        "host": inst.host.label,
        "version": __version__,
        "depends-on": ",".join(service.depends_on),
    }
    body = {
        "ID": inst.id,
        "Name": inst.service,
        "Tags": list(service.tags),
        "Address": inst.address,
        "Port": inst.port,
        "Meta": meta,
        "Check": check(plan, inst, runtime),
    }
    body["Meta"]["spec-hash"] = spec_hash(body)
    return body


def spec_hash(body: dict) -> str:
    unhashed = {**body, "Meta": {k: v for k, v in body["Meta"].items() if k != "spec-hash"}}
    return hashlib.sha256(json.dumps(unhashed, sort_keys=True).encode()).hexdigest()[:16]


def is_ours(service: dict, mesh: str) -> bool:
    """A registration this mesh's deploys created (and so may prune)."""
    meta = service.get("Meta") or {}
    return meta.get("managed-by") == MANAGED_BY and meta.get("mesh") == mesh
