"""The mesh's alert rules, each shown firing and not firing by Prometheus' own rule engine:
`promtool test rules` on the rendered rules file, with series as the mesh's targets expose them.
Two services with different SLOs show that each is held to its own."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from meshspec.render.monitoring import alert_rules, prometheus_rules
from tests.proxy.meshes import make_mesh, service

pytestmark = pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) is not installed")

M = 'mesh="testmesh"'
# api: 5% errors allowed; web: the default 1% (latency SLOs are applied by the controller as it counts)
SERVICES = [service("api", 9100, 2, {"slo": {"error_ratio": 0.05, "latency": "500ms"}}), service("web", 9200, 1)]

SERIES = {  # every value a minute apart, from 0m
    f'up{{{M}, job="api", instance_id="api-local-0"}}': "1 1 0x12",
    f'up{{{M}, job="web", instance_id="web-local-0"}}': "1x14",
    f'haproxy_backend_active_servers{{{M}, proxy="svc_api"}}': "0x14",
    f'haproxy_backend_active_servers{{{M}, proxy="svc_web"}}': "1x14",
    f'haproxy_server_status{{{M}, proxy="svc_api", server="api-local-1", state="DOWN"}}': "1x14",
    f'haproxy_server_status{{{M}, proxy="svc_api", server="spare-1", state="DOWN"}}': "1x14",  # an empty slot
    f'haproxy_server_status{{{M}, proxy="svc_web", server="web-local-0", state="DOWN"}}': "0x14",
    f'meshspec_controller_outlier_ejections_total{{{M}, backend="svc_api"}}': "0x9 1x5",
    f'meshspec_controller_outlier_ejections_total{{{M}, backend="svc_web"}}': "0x14",
    f'haproxy_server_check_up_down_total{{{M}, proxy="svc_api", server="api-local-0"}}': "0 1 2 3 4x11",
    f'haproxy_server_check_up_down_total{{{M}, proxy="svc_web", server="web-local-0"}}': "0 1x13",
    # host a's checker last wrote at 2m; host b's every minute (the file's mtime, as node-exporter says)
    f'node_textfile_mtime_seconds{{{M}, instance_id="node-a", file="/m/checker/metrics/checker.prom"}}': "0 60 120x12",
    f'node_textfile_mtime_seconds{{{M}, instance_id="node-b", file="/m/checker/metrics/checker.prom"}}': "0+60x14",
    f'meshspec_controller_consul_up{{{M}, instance_id="controller-a"}}': "0x14",
    f'meshspec_controller_consul_up{{{M}, instance_id="controller-b"}}': "1x14",
    f'meshspec_controller_haproxy_up{{{M}, instance_id="controller-a"}}': "0x14",
    f'meshspec_controller_haproxy_up{{{M}, instance_id="controller-b"}}': "1x14",
    # a: valid 0..500 s, a quarter left from 375 s on (past its end at 12 min); b: valid 0..4000 s
    f'meshspec_controller_certificate_valid_after_timestamp_seconds{{{M}, instance_id="controller-a"}}': "0x14",
    f'meshspec_controller_certificate_valid_before_timestamp_seconds{{{M}, instance_id="controller-a"}}': "500x14",
    f'meshspec_controller_certificate_valid_after_timestamp_seconds{{{M}, instance_id="controller-b"}}': "0x14",
    f'meshspec_controller_certificate_valid_before_timestamp_seconds{{{M}, instance_id="controller-b"}}': "4000x14",
    # 3% errors: within api's 5%, over web's 1%
    f'haproxy_backend_http_responses_total{{{M}, proxy="svc_api", code="5xx"}}': "0+3x14",
    f'haproxy_backend_http_responses_total{{{M}, proxy="svc_api", code="2xx"}}': "0+97x14",
    f'haproxy_backend_http_responses_total{{{M}, proxy="svc_web", code="5xx"}}': "0+30x14",
    f'haproxy_backend_http_responses_total{{{M}, proxy="svc_web", code="2xx"}}': "0+970x14",
    # answers over each one's SLO (the controller counts them with the service's own): api 2%, web
    # 1% (not more than 1%: its p99 is within)
    f'meshspec_proxy_request_duration_seconds_count{{{M}, proxy="svc_api"}}': "0+100x14",
    f'meshspec_proxy_responses_over_slo_total{{{M}, proxy="svc_api"}}': "0+2x14",
    f'meshspec_proxy_request_duration_seconds_count{{{M}, proxy="svc_web"}}': "0+1000x14",
    f'meshspec_proxy_responses_over_slo_total{{{M}, proxy="svc_web"}}': "0+10x14",
}

# At 12 min: who fires (the labels of each firing series, besides the rule's own)
FIRING = {
    "MeshInstanceDown": [{"job": "api", "instance_id": "api-local-0"}],
    "MeshServiceUnavailable": [{"proxy": "svc_api"}],
    "MeshServerOutOfRotation": [{"proxy": "svc_api", "server": "api-local-1", "state": "DOWN"}],
    "MeshServerEjected": [{"backend": "svc_api"}],
    "MeshCheckFlapping": [{"proxy": "svc_api", "server": "api-local-0"}],
    "MeshCheckerStalled": [{"instance_id": "node-a", "file": "/m/checker/metrics/checker.prom"}],
    "MeshRegistryUnreachable": [{"instance_id": "controller-a"}],
    "MeshProxyUnmanaged": [{"instance_id": "controller-a"}],
    "MeshProxyCertificateExpiring": [{"instance_id": "controller-a"}],
    "MeshServiceErrors": [{"proxy": "svc_web"}],
    "MeshServiceSlow": [{"proxy": "svc_api"}],
}


def summary_for(rule: dict, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], rule["annotations"]["summary"])


def expected(rule: dict, labels: dict[str, str]) -> dict:
    full = {"mesh": "testmesh", **labels, "severity": rule["labels"]["severity"]}
    return {"exp_labels": full, "exp_annotations": {"summary": summary_for(rule, full)}}


def promtool(tmp_path, tests: list[dict], plan) -> subprocess.CompletedProcess:
    (tmp_path / "rules.yml").write_text(prometheus_rules(plan, plan.instances[0]))
    (tmp_path / "test.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": tests}, sort_keys=False))
    return subprocess.run(["promtool", "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return make_mesh(SERVICES, (9001, 9002, 9003), tmp_path_factory.mktemp("rules"))


def series(values: dict[str, str]) -> list[dict]:
    return [{"series": s, "values": v} for s, v in values.items()]


def rule_for(rules: list[dict], name: str, labels: dict[str, str]) -> dict:
    """The rule named `name` that covers these labels' service: an SLO rule comes once per SLO."""
    named = [r for r in rules if r["alert"] == name]
    return named[0] if len(named) == 1 else next(r for r in named if f'"{labels["proxy"]}"' in r["expr"])


def test_every_rule_fires_on_what_breaks_and_not_on_what_does_not(plan, tmp_path):
    rules = alert_rules(plan)
    assert {r["alert"] for r in rules} == set(FIRING)
    assert sum(r["alert"] == "MeshServiceErrors" for r in rules) == 2  # api's SLO and web's
    cases = [{"eval_time": "12m", "alertname": name,
              "exp_alerts": [expected(rule_for(rules, name, labels), labels) for labels in firing]}
             for name, firing in FIRING.items()]
    # before their `for`, the same breaks fire nothing yet (those with none, at once, are left out)
    cases += [{"eval_time": "30s", "alertname": name, "exp_alerts": []}
              for name in ("MeshInstanceDown", "MeshServiceErrors", "MeshServiceSlow", "MeshRegistryUnreachable",
                           "MeshCheckerStalled")]
    result = promtool(tmp_path, [{"interval": "1m", "input_series": series(SERIES), "alert_rule_test": cases}], plan)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_rule_that_does_not_fire_fails_its_test(plan, tmp_path):
    """The test above can fail: expecting an alert of the healthy service is refused."""
    rule = next(r for r in alert_rules(plan) if r["alert"] == "MeshServiceUnavailable")
    case = {"eval_time": "12m", "alertname": "MeshServiceUnavailable",
            "exp_alerts": [expected(rule, {"proxy": "svc_web"})]}
    result = promtool(tmp_path, [{"interval": "1m", "input_series": series(SERIES), "alert_rule_test": [case]}], plan)
    assert result.returncode == 1 and "svc_web" in result.stdout + result.stderr
