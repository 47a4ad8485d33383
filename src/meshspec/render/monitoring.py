"""Prometheus and Alertmanager configuration from the plan: pure.

Debian builds Prometheus without Consul service discovery, so its targets are rendered from
the plan: every instance of a service that declares `metrics`. The deploy rewrites the files
(and restarts Prometheus) when the plan changes.
"""

from __future__ import annotations

import yaml

from meshspec.plan import Instance, Plan
from meshspec.render.haproxy import backend_name, routed_services


def _instances_rendering(plan: Plan, config: str) -> list[tuple[Instance, str]]:
    """(instance, rendered path) of every instance that has a file rendered by `config`."""
    found = []
    for inst in plan.instances:
        process = plan.service(inst.service).process
        for path, name in (process.files.items() if process else ()):
            if name == config:
                found.append((inst, plan.render(inst, path)))
    return found


def prometheus(plan: Plan, inst: Instance) -> str:
    own_rules = [path for i, path in _instances_rendering(plan, "prometheus-rules") if i == inst]
    alertmanagers = [f"{i.address}:{i.port}" for i, _ in _instances_rendering(plan, "alertmanager")]
    scrape = []
    for service in plan.spec.services:
        if service.metrics is None:
            continue
        targets = [
            {"targets": [f"{i.address}:{i.ports[service.metrics.port] if service.metrics.port else i.port}"],
             "labels": {"instance_id": i.id, "kind": service.kind, "mesh": plan.spec.mesh.name}}
            for i in plan.instances_of(service.name)
        ]
        scrape.append({"job_name": service.name, "metrics_path": service.metrics.path, "static_configs": targets})
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": own_rules,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]} if alertmanagers else {},
        "scrape_configs": scrape,
    }
    return yaml.safe_dump({k: v for k, v in config.items() if v}, sort_keys=False)


def _alert(name: str, expr: str, for_: str, severity: str, summary: str) -> dict:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary}}


def _by_slo(plan: Plan, field: str) -> dict[object, list[str]]:
    """Each value of the routed services' `routing.slo.<field>` -> their backends: one rule per
    value, however many services share it."""
    groups: dict[object, list[str]] = {}
    for service, routing in routed_services(plan):
        groups.setdefault(getattr(routing.slo, field), []).append(backend_name(service.name))
    return groups


def alert_rules(plan: Plan) -> list[dict]:
    """What breaks a mesh, as Prometheus alerts on what it scrapes (every series of the mesh's
    targets carries `mesh`): tested firing and not firing by `promtool test rules`
    (tests/unit/test_alert_rules.py)."""
    m = f'mesh="{plan.spec.mesh.name}"'
    svc = f'{m}, proxy=~"svc_.+"'
    rules = [
        _alert("MeshInstanceDown", f"up{{{m}}} == 0", "1m", "critical",
               "{{ $labels.instance_id }} has not answered its metrics scrape for 1m"),
        _alert("MeshServiceUnavailable", f"haproxy_backend_active_servers{{{svc}}} == 0", "30s", "critical",
               "{{ $labels.proxy }} has no server in the proxy's rotation: every request to it fails"),
        _alert("MeshServerOutOfRotation",
               f'haproxy_server_status{{{svc}, server!~"spare-.+", state="DOWN"}} == 1', "1m", "warning",
               "{{ $labels.proxy }}/{{ $labels.server }} is down in the proxy (its checks fail or its "
               "circuit breaker is open)"),
        _alert("MeshServerEjected", f"increase(meshspec_controller_outlier_ejections_total{{{m}}}[5m]) > 0", "0s",
               "warning", "the controller ejected a server of {{ $labels.backend }}: its requests kept timing out"),
        _alert("MeshCheckFlapping",
               f'increase(haproxy_server_check_up_down_total{{{svc}, server!~"spare-.+"}}[15m]) >= 3', "0s",
               "warning", "{{ $labels.proxy }}/{{ $labels.server }} went down 3 times or more in 15m"),
        _alert("MeshRegistryUnreachable", f"meshspec_controller_consul_up{{{m}}} == 0", "1m", "critical",
               "the proxy's controller cannot reach the registry: the proxy serves the last known good"),
        _alert("MeshProxyUnmanaged", f"meshspec_controller_haproxy_up{{{m}}} == 0", "1m", "critical",
               "the proxy's controller cannot reach HAProxy's runtime API: no change reaches the proxy"),
        # Rotated at half its lifetime: a quarter left means the rotation is overdue.
        _alert("MeshProxyCertificateExpiring",
               f"(meshspec_controller_certificate_valid_before_timestamp_seconds{{{m}}} - time()) < 0.25 * "
               f"(meshspec_controller_certificate_valid_before_timestamp_seconds{{{m}}} - "
               f"meshspec_controller_certificate_valid_after_timestamp_seconds{{{m}}})", "5m", "warning",
               "the proxy's mTLS certificate has less than a quarter of its lifetime left: it was not rotated"),
    ]
    for ratio, backends in sorted(_by_slo(plan, "error_ratio").items()):
        which = f'{m}, proxy=~"{"|".join(backends)}"'
        rules.append(_alert(
            "MeshServiceErrors",
            f'sum by (mesh, proxy) (rate(haproxy_backend_http_responses_total{{{which}, code="5xx"}}[5m])) / '
            f"sum by (mesh, proxy) (rate(haproxy_backend_http_responses_total{{{which}}}[5m])) > {ratio}", "5m", "warning",
            f"more than {ratio:.2%} of {{{{ $labels.proxy }}}}'s answers through the proxy are 5xx (its SLO)"))
    for latency, backends in sorted(_by_slo(plan, "latency").items()):
        which = f'{m}, proxy=~"{"|".join(backends)}"'
        rules.append(_alert(
            "MeshServiceSlow", f"haproxy_backend_response_time_average_seconds{{{which}}} > {latency / 1000}", "5m",
            "warning", f"{{{{ $labels.proxy }}}} answers in more than {latency} ms on average (its SLO; the mean "
            "of its last 1,024 answers)"))
    return rules


def prometheus_rules(plan: Plan, inst: Instance) -> str:
    return yaml.safe_dump({"groups": [{"name": "meshspec", "rules": alert_rules(plan)}]}, sort_keys=False)


def alertmanager(plan: Plan, inst: Instance) -> str:
    # Alerts are kept and shown by Alertmanager itself; no outside receiver is reachable here.
    config = {"route": {"receiver": "mesh", "group_by": ["alertname", "instance_id"]}, "receivers": [{"name": "mesh"}]}
    return yaml.safe_dump(config, sort_keys=False)
