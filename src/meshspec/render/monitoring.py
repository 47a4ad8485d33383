"""Prometheus and Alertmanager configuration from the plan: pure.

Prometheus finds its targets in the registry at run time: Debian builds it without Consul service
discovery, so it asks the proxy's controller (HTTP service discovery), which lists every instance
whose registration says where it exports metrics (runtime.proxy.scrape_targets), with
Prometheus' own registry token. The deploy rewrites the files (and restarts Prometheus) when the
plan changes; instances come and go without it.
"""

from __future__ import annotations

import yaml

from meshspec.common import alert_webhook, scrape_meta
from meshspec.plan import Instance, Plan
from meshspec.render.haproxy import backend_name, routed_services
from meshspec.spec.resolve import effective_routing, path_prefix


def _instances_rendering(plan: Plan, config: str) -> list[tuple[Instance, str]]:
    """(instance, rendered path) of every instance that has a file rendered by `config`."""
    found = []
    for inst in plan.instances:
        process = plan.service(inst.service).process
        for path, name in (process.files.items() if process else ()):
            if name == config:
                found.append((inst, plan.render(inst, path)))
    return found


def bearer_config(credentials_file: str) -> dict[str, str]:
    """An `authorization` of Prometheus' and Alertmanager's HTTP clients. The type is written out:
    Prometheus 2.42 sends the bare credentials without it (measured), which no server takes."""
    return {"type": "Bearer", "credentials_file": credentials_file}


#: How often Prometheus asks for its targets: an instance registered is scraped this soon.
SD_REFRESH = "10s"
SCRAPE_INTERVAL = EVALUATION_INTERVAL = "15s"


def prometheus(plan: Plan, inst: Instance) -> str:
    own_rules = [path for i, path in _instances_rendering(plan, "prometheus-rules") if i == inst]
    alertmanagers = [f"{i.address}:{i.port}" for i, _ in _instances_rendering(plan, "alertmanager")]
    scrape = []
    if plan.spec.proxy.controller is not None:
        controller = plan.nearest(plan.spec.proxy.controller, inst.host)
        targets = f"http://{controller.address}:{controller.port}{scrape_meta.TARGETS_PATH}"
        token = str(plan.layout.service_token_file(inst.service))
        registry = plan.spec.consul.service if plan.external_consul is None else None

        # With several hosts, the scrapes go out through this host's proxy: another host's targets
        # over mTLS, through that host's proxy (render.haproxy.egress_sections).
        egress = {"proxy_url": proxy} if (proxy := plan.egress_url(inst.host)) else {}

        def discovered(job: str, url: str) -> dict:
            # Each target's labels name its service as `job` (they win over the job's name).
            return {"job_name": job, "http_sd_configs": [{"url": url, "refresh_interval": SD_REFRESH,
                                                          "authorization": bearer_config(token)}], **egress}

        # The registry's agent answers its metrics only for a token that may read agents: that job
        # alone presents Prometheus' own, which no other target (an exporter) ever sees.
        scrape.append({**discovered("mesh", targets), **({"relabel_configs": [
            {"source_labels": ["job"], "regex": registry, "action": "drop"}]} if registry else {})})
        if registry and plan.service(inst.service).registry.agent == "read":
            scrape.append({**discovered("registry", f"{targets}?service={registry}"), "authorization": bearer_config(token)})
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": EVALUATION_INTERVAL},
        "rule_files": own_rules,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]} if alertmanagers else {},
        "scrape_configs": scrape,
    }
    return yaml.safe_dump({k: v for k, v in config.items() if v}, sort_keys=False)


def _alert(name: str, expr: str, for_: str, severity: str, summary: str) -> dict:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary}}


#: the share of a service's answers over its SLO latency that makes its p99 over it
P99_OVER = 0.01


def _by_error_ratio(plan: Plan) -> dict[float, list[str]]:
    """Each value of the routed services' `routing.slo.error_ratio` -> their backends: one rule per
    value, however many services share it."""
    groups: dict[float, list[str]] = {}
    for service, routing in routed_services(plan):
        groups.setdefault(routing.slo.error_ratio, []).append(backend_name(service.name))
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
        # The checker rewrites its metrics every few seconds (runtime/checker.py); node-exporter says when.
        _alert("MeshCheckerStalled", f'time() - node_textfile_mtime_seconds{{{m}, file=~".*/checker.prom"}} > 60',
               "1m", "critical", "the checker of {{ $labels.instance_id }}'s host has written no result for over "
               "a minute: its checks turn critical as their TTLs run out"),
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
    for ratio, backends in sorted(_by_error_ratio(plan).items()):
        which = f'{m}, proxy=~"{"|".join(backends)}"'
        rules.append(_alert(
            "MeshServiceErrors",
            f'sum by (mesh, proxy) (rate(haproxy_backend_http_responses_total{{{which}, code="5xx"}}[5m])) / '
            f"sum by (mesh, proxy) (rate(haproxy_backend_http_responses_total{{{which}}}[5m])) > {ratio}", "5m", "warning",
            f"more than {ratio:.2%} of {{{{ $labels.proxy }}}}'s answers through the proxy are 5xx (its SLO)"))
    # Each service's SLO is applied by the controller as it counts each answer (its latency is in
    # haproxy.cfg's shape): more than 1% of answers over it is a p99 over it, whatever the buckets.
    rules.append(_alert(
        "MeshServiceSlow",
        f"sum by (mesh, proxy) (rate(meshspec_proxy_responses_over_slo_total{{{svc}}}[5m])) / "
        f"sum by (mesh, proxy) (rate(meshspec_proxy_request_duration_seconds_count{{{svc}}}[5m])) > {P99_OVER}",
        "5m", "warning", f"more than {P99_OVER:.0%} of {{{{ $labels.proxy }}}}'s answers through the proxy take "
        "longer than its SLO: its p99 is over it"))
    return rules


def prometheus_rules(plan: Plan, inst: Instance) -> str:
    return yaml.safe_dump({"groups": [{"name": "meshspec", "rules": alert_rules(plan)}]}, sort_keys=False)


#: Who stores the mesh's alerts: backend-api's webhook (runtime/services/alert_store.py), reached
#: through the proxy's edge with the key of the consumer Alertmanager holds (`held_by`).
ALERT_STORE = ("backend-api", alert_webhook.PATH)
#: By severity: a critical alert is sent at once and repeated hourly while it fires; warnings wait
#: 30 s to be sent together and repeat every 4 h.
SEVERITY_ROUTES = (("critical", "0s", "1m", "1h"), ("warning", "30s", "5m", "4h"))


def alertmanager(plan: Plan, inst: Instance) -> str:
    """Every alert with a severity (the mesh's rules all set one) goes to the alert store, by
    severity; an alert without one (the checker's round-trip probe posts them) reaches nobody."""
    service, path = ALERT_STORE
    key = next((c for c in plan.spec.consumers if c.held_by == inst.service), None)
    receivers, routes = [{"name": "nobody"}], []
    if key is not None and service in {s.name for s in plan.spec.services}:
        store = effective_routing(plan.spec, plan.service(service))
        url = f"{plan.render(inst, '{proxy.url}')}{path_prefix(plan.service(service), store)}{path}"
        key_file = str(plan.layout.consumer_key_file(key.name))
        for severity, wait, interval, repeat in SEVERITY_ROUTES:
            receivers.append({"name": f"{service}-{severity}", "webhook_configs": [
                {"url": url, "send_resolved": True, "http_config": {"authorization": bearer_config(key_file)}}]})
            routes.append({"receiver": f"{service}-{severity}", "matchers": [f'severity="{severity}"'],
                           "group_wait": wait, "group_interval": interval, "repeat_interval": repeat})
    route = {"receiver": "nobody", "group_by": ["alertname", "instance_id"], **({"routes": routes} if routes else {})}
    return yaml.safe_dump({"route": route, "receivers": receivers}, sort_keys=False)
