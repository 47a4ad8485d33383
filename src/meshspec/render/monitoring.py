"""Prometheus and Alertmanager configuration from the plan: pure.

Debian builds Prometheus without Consul service discovery, so its targets are rendered from
the plan: every instance of a service that declares `metrics`. The deploy rewrites the files
(and restarts Prometheus) when the plan changes.
"""

from __future__ import annotations

import yaml

from meshspec.plan import Instance, Plan


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


def prometheus_rules(plan: Plan, inst: Instance) -> str:
    rule = {
        "alert": "MeshInstanceDown",
        "expr": f'up{{mesh="{plan.spec.mesh.name}"}} == 0',
        "for": "1m",
        "labels": {"severity": "critical"},
        "annotations": {"summary": "{{ $labels.instance_id }} has not answered its metrics scrape for 1m"},
    }
    return yaml.safe_dump({"groups": [{"name": "meshspec", "rules": [rule]}]}, sort_keys=False)


def alertmanager(plan: Plan, inst: Instance) -> str:
    # Alerts are kept and shown by Alertmanager itself; no outside receiver is reachable here.
    config = {"route": {"receiver": "mesh", "group_by": ["alertname", "instance_id"]}, "receivers": [{"name": "mesh"}]}
    return yaml.safe_dump(config, sort_keys=False)
