"""The dashboard's PromQL (common/dashboard_queries.py), evaluated by Prometheus' own engine
(`promtool test rules`, its promql_expr_test) on series as HAProxy's exporter names them, in both
forms: held to one mesh (Grafana's) and unfiltered (backend-api's, on the mesh's own Prometheus).
And backend-api's reading of a range query's answer."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from meshspec.common.dashboard_queries import EDGES, PANELS, expression
from meshspec.runtime.services.dashboard import MetricsUnreadable, series_of

needs_promtool = pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) is not installed")

M = 'mesh="testmesh"'
SERIES = {  # a sample every 15 s, as the mesh's Prometheus scrapes
    # api: 2 requests/s, 10% of its answers 5xx; web: 1 request/s, no error;
    # idle: no request at all (no error ratio); not services: HAProxy's stats page and another mesh.
    f'haproxy_backend_http_requests_total{{{M}, proxy="svc_api"}}': "0+30x20",
    f'haproxy_backend_http_requests_total{{{M}, proxy="svc_web"}}': "0+15x20",
    f'haproxy_backend_http_requests_total{{{M}, proxy="svc_idle"}}': "0x20",
    f'haproxy_backend_http_requests_total{{{M}, proxy="stats"}}': "0+15x20",
    'haproxy_backend_http_requests_total{mesh="other", proxy="svc_api"}': "0+150x20",
    f'haproxy_backend_http_responses_total{{{M}, proxy="svc_api", code="2xx"}}': "0+27x20",
    f'haproxy_backend_http_responses_total{{{M}, proxy="svc_api", code="5xx"}}': "0+3x20",
    f'haproxy_backend_http_responses_total{{{M}, proxy="svc_web", code="2xx"}}': "0+15x20",
    f'haproxy_backend_http_responses_total{{{M}, proxy="svc_web", code="5xx"}}': "0x20",
    f'haproxy_backend_http_responses_total{{{M}, proxy="svc_idle", code="2xx"}}': "0x20",
    f'haproxy_backend_http_responses_total{{{M}, proxy="svc_idle", code="5xx"}}': "0x20",
    # the controller's count by caller: api's 2/s, 1.5 from web and 0.5 from the operator's key
    f'meshspec_proxy_caller_requests_total{{{M}, proxy="svc_api", caller="web"}}': "0+22.5x20",
    f'meshspec_proxy_caller_requests_total{{{M}, proxy="svc_api", caller="operator"}}': "0+7.5x20",
    'meshspec_proxy_caller_requests_total{mesh="other", proxy="svc_api", caller="web"}': "0+150x20",
}
# The controller's histogram of answers, as answers a second under each bucket's bound (100 a
# second: quantiles exact in floating point): api half within 100 ms, 98% within 500 ms, all within
# 1 s; web half within 25 ms, all within 50 ms.
BUCKETS = {
    "api": {"0.05": 0, "0.1": 50, "0.25": 80, "0.5": 98, "1": 100, "+Inf": 100},
    "web": {"0.01": 0, "0.025": 50, "0.05": 100, "+Inf": 100},
    "idle": {"0.1": 0, "+Inf": 0},
}
for (mesh, name), per_s in {(M, "api"): 1, (M, "web"): 1, (M, "idle"): 1, ('mesh="other"', "api"): 0.1}.items():
    for le, rate in BUCKETS[name].items():
        SERIES[f'meshspec_proxy_request_duration_seconds_bucket{{{mesh}, proxy="svc_{name}", le="{le}"}}'] = \
            f"0+{rate * per_s * 15}x20"
    SERIES[f'meshspec_proxy_request_duration_seconds_count{{{mesh}, proxy="svc_{name}"}}'] = \
        f"0+{BUCKETS[name]['+Inf'] * per_s * 15}x20"
EXPECTED = {  # each panel at 4m: {service: value}
    "requests": {"api": 2, "web": 1, "idle": 0},
    "errors": {"api": 0.1, "web": 0},  # idle answered nothing: no ratio
    # interpolated within the bucket the rank falls in; idle answered nothing: no latency
    "p50": {"api": 0.1, "web": 0.025},
    "p99": {"api": 0.75, "web": 0.0495},
}


def promtool(tmp_path, cases: list[dict], series: dict[str, str]) -> subprocess.CompletedProcess:
    (tmp_path / "test.yml").write_text(yaml.safe_dump({"rule_files": [], "tests": [{
        "interval": "15s", "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "promql_expr_test": cases}]}, sort_keys=False))
    return subprocess.run(["promtool", "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True,
                          timeout=60)


def case(expr: str, values: dict[str, float]) -> dict:
    return {"expr": expr, "eval_time": "4m",
            "exp_samples": [{"labels": f'{{proxy="svc_{s}", service="{s}"}}', "value": v} for s, v in values.items()]}


@needs_promtool
@pytest.mark.parametrize("mesh", ["testmesh", None], ids=["one mesh of several", "the mesh's own"])
def test_each_panel_measures_each_service(tmp_path, mesh):
    series = SERIES if mesh else {s: v for s, v in SERIES.items() if 'mesh="other"' not in s}
    result = promtool(tmp_path, [case(expression(p, mesh), EXPECTED[p.id]) for p in PANELS], series)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize("mesh", ["testmesh", None], ids=["one mesh of several", "the mesh's own"])
def test_the_topology_edges_are_each_callers_rate_into_each_service(tmp_path, mesh):
    series = SERIES if mesh else {s: v for s, v in SERIES.items() if 'mesh="other"' not in s}
    edges = {"expr": expression(EDGES, mesh), "eval_time": "4m", "exp_samples": [
        {"labels": f'{{proxy="svc_api", service="api", caller="{caller}"}}', "value": rate}
        for caller, rate in (("web", 1.5), ("operator", 0.5))]}
    result = promtool(tmp_path, [edges], series)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_another_meshs_traffic_would_fail_the_test(tmp_path):
    """Unfiltered on a Prometheus that scrapes two meshes, api's rate is both meshes': the test above can fail."""
    requests = next(p for p in PANELS if p.id == "requests")
    result = promtool(tmp_path, [case(expression(requests), EXPECTED["requests"])], SERIES)
    assert result.returncode == 1 and "svc_api" in result.stdout + result.stderr


def answer(result: list[dict], status: str = "success", kind: str = "matrix") -> str:
    return json.dumps({"status": status, "data": {"resultType": kind, "result": result}})


def test_a_range_answer_becomes_points_by_service():
    body = answer([
        {"metric": {"proxy": "svc_web", "service": "web"}, "values": [[100, "1"], [130, "NaN"], [160, "+Inf"]]},
        {"metric": {"proxy": "svc_api", "service": "api"}, "values": [[100, "0.5"], [130, "2"]]},
        {"metric": {"proxy": "svc_api", "service": "api", "caller": "web"}, "values": [[100, "0.25"]]},
    ])
    assert series_of(body) == [{"service": "api", "points": [[100.0, 0.5], [130.0, 2.0]]},
                               {"service": "api", "caller": "web", "points": [[100.0, 0.25]]},
                               {"service": "web", "points": [[100.0, 1.0]]}]  # JSON spells no NaN nor Inf


@pytest.mark.parametrize("body", [
    json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}),
    answer([], kind="vector"),
])
def test_an_answer_that_is_no_range_is_refused(body):
    with pytest.raises(MetricsUnreadable):
        series_of(body)
