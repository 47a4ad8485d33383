"""Plan -> Consul service registrations (Consul's JSON field names). Pure.

`spec-hash` in Meta is the hash of everything else registered, so a deploy compares one
field to know whether a registration is as declared.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from meshspec import __version__
from meshspec.common.digest import digest
from meshspec.plan import Instance, Plan, Runtime
from meshspec.render.probes import HTTP, MCP, TCP, probe
from meshspec.spec.resolve import effective_health_timing
from meshspec.spec.types import format_duration

MANAGED_BY = "meshspec"


def check(plan: Plan, inst: Instance, runtime: Runtime = Runtime.PROCESS) -> dict:
    """The Consul check that proves the instance does its job (its probe, render.probes)."""
    service = plan.service(inst.service)
    health, timing = service.health, effective_health_timing(plan.spec, service)
    found = probe(plan, inst, runtime)
    if found.kind == HTTP:
        how = {"HTTP": found.url, "Method": found.method, "Header": {k: [v] for k, v in found.headers.items()}}
        how |= {"Body": found.body} if found.body is not None else {}
    elif found.kind == MCP:
        # meshspec-probe, beside meshspec: a lean entry point, as Consul starts it every interval.
        probe_bin = str(PurePosixPath(plan.meshspec_bin).with_name("meshspec-probe"))
        how = {"Args": [probe_bin, "mcp", found.url, "--min-tools", str(found.min_tools)]}
    elif found.kind == TCP:
        how = {"TCP": f"{found.address}:{found.port}"}
    else:
        how = {"Args": list(found.argv)}
        how |= {"DockerContainerID": found.container, "Shell": "/bin/sh"} if found.container else {}
    timing_fields = {
        "Interval": format_duration(timing.interval),
        "Timeout": format_duration(timing.timeout),
        "SuccessBeforePassing": timing.success_before_passing,
        "FailuresBeforeCritical": timing.failures_before_critical,
    }
    if timing.deregister_critical_after is not None:
        timing_fields["DeregisterCriticalServiceAfter"] = format_duration(timing.deregister_critical_after)
    return {"CheckID": f"service:{inst.id}", "Name": f"{inst.service} {health.probe}", **how, **timing_fields}


def registration(plan: Plan, inst: Instance, runtime: Runtime) -> dict:
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
    return digest(unhashed)


def is_ours(service: dict, mesh: str) -> bool:
    """A registration this mesh's deploys created (and so may prune)."""
    meta = service.get("Meta") or {}
    return meta.get("managed-by") == MANAGED_BY and meta.get("mesh") == mesh
