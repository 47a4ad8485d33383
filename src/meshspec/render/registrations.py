"""Plan -> Consul service registrations (Consul's JSON field names). Pure.

`spec-hash` in Meta is the hash of everything else registered, so a deploy compares one
field to know whether a registration is as declared.
"""

from __future__ import annotations

from meshspec import __version__
from meshspec.common import scrape_meta
from meshspec.common.digest import digest
from meshspec.plan import Instance, Plan, Runtime
from meshspec.render.checker import CHECKER, check_id
from meshspec.render.probes import probe, ttl_ms
from meshspec.spec.resolve import effective_health_timing
from meshspec.spec.types import format_duration

MANAGED_BY = "meshspec"


def check(plan: Plan, inst: Instance, runtime: Runtime = Runtime.PROCESS) -> dict:
    """The instance's Consul check: a TTL check that the host's checker (render.checker) renews with
    the result of the instance's probe (render.probes) every interval."""
    service = plan.service(inst.service)
    health, timing = service.health, effective_health_timing(plan.spec, service)
    found = probe(plan, inst, runtime)
    fields = {
        "CheckID": check_id(inst),
        "Name": f"{inst.service} {health.probe}",
        "Notes": f"{CHECKER} probes {found.kind} {found.target} every {format_duration(timing.interval)} "
                 f"(timeout {format_duration(timing.timeout)})",
        "TTL": format_duration(ttl_ms(timing)),
        # Consul applies these to the checks it runs, not to TTL checks: the checker applies them
        # (probes.gate) before it reports. Registered so the policy is visible and compared.
        "SuccessBeforePassing": timing.success_before_passing,
        "FailuresBeforeCritical": timing.failures_before_critical,
    }
    if timing.deregister_critical_after is not None:
        fields["DeregisterCriticalServiceAfter"] = format_duration(timing.deregister_critical_after)
    return fields


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
    if service.metrics is not None:  # Prometheus finds it through the registry (runtime.proxy.scrape_targets)
        meta |= {scrape_meta.PORT: str(plan.metrics_port(inst)), scrape_meta.PATH: service.metrics.path}
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


#: What a registration is compared by: Consul's agent/services key -> the registered body's key.
COMPARED = (("Service", "Name"), ("Address", "Address"), ("Port", "Port"), ("Tags", "Tags"))
#: What Consul's agent/checks answers of a check, compared with the check registered (a TTL check
#: shows no TTL there: its Notes carry the probe, interval and timeout the TTL follows from).
CHECK_COMPARED = ("Name", "Notes", "ServiceID")


def differences(registered: dict | None, checks: dict[str, dict], wanted: dict) -> list[str]:
    """How an instance's registration in Consul (its agent/services entry, and its check among
    agent/checks) differs from `wanted`, the one the plan declares, check included; [] when it is
    as declared. The deploy re-registers on any difference and verify names them. Pure."""
    if registered is None:
        return ["not registered"]
    found = []
    for consul_key, key in COMPARED:
        have, want = registered.get(consul_key), wanted.get(key)
        if consul_key == "Tags":
            have = list(have or [])
        if have != want:
            found.append(f"{consul_key.lower()} {have!r}, declared {want!r}")
    meta, wanted_meta = registered.get("Meta") or {}, wanted.get("Meta") or {}
    for key in sorted(set(meta) | set(wanted_meta)):
        if meta.get(key) != wanted_meta.get(key):
            have = repr(meta[key]) if key in meta else "missing"
            want = repr(wanted_meta[key]) if key in wanted_meta else "not declared"
            found.append(f"meta {key} {have}, declared {want}")
    check = wanted["Check"]
    registered_check = checks.get(check["CheckID"])
    if registered_check is None:
        return [*found, f"check {check['CheckID']} missing"]
    declared = {"Type": "ttl", "ServiceID": wanted["ID"], **{k: check[k] for k in CHECK_COMPARED if k in check}}
    for key, want in declared.items():
        if registered_check.get(key) != want:
            found.append(f"check {key.lower()} {registered_check.get(key)!r}, declared {want!r}")
    return found


def spec_hash(body: dict) -> str:
    unhashed = {**body, "Meta": {k: v for k, v in body["Meta"].items() if k != "spec-hash"}}
    return digest(unhashed)


def is_ours(service: dict, mesh: str) -> bool:
    """A registration this mesh's deploys created (and so may prune)."""
    meta = service.get("Meta") or {}
    return meta.get("managed-by") == MANAGED_BY and meta.get("mesh") == mesh
