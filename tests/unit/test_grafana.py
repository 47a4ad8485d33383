"""The Grafana export (render/grafana.py): the dashboard's panels, with the PromQL the frontend's
view runs, held to the spec's mesh; a JSON model Grafana imports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshspec.common.dashboard_queries import PANELS, SERVICE_BACKEND, expression, firing_alerts
from meshspec.plan import make_plan
from meshspec.plan.hosts import Host
from meshspec.render.grafana import dashboard, dashboard_json
from meshspec.render.haproxy import backend_name, routed_services
from meshspec.spec import load_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return make_plan(load_spec(REPO / "mesh_spec.yaml"), [Host("@local", "127.0.0.1")], 0,
                     str(tmp_path_factory.mktemp("grafana")))


def test_the_panels_run_the_dashboards_queries_for_this_mesh(plan):
    mesh = plan.spec.mesh.name
    exported = {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard(plan)["panels"]}
    for panel in PANELS:
        assert exported[panel.title] == [expression(panel, mesh)]
        assert f'mesh="{mesh}"' in exported[panel.title][0]
    assert exported["Request rate now"] == [expression(PANELS[0], mesh)]
    assert exported["Active alerts"] == [firing_alerts(mesh)]


def test_every_routed_service_is_a_backend_the_queries_select(plan):
    """The queries name HAProxy's backends by their prefix; render/haproxy.py names them."""
    routed = routed_services(plan)
    assert len(routed) > 30
    for service, _ in routed:
        assert backend_name(service.name) == SERVICE_BACKEND + service.name


def test_a_json_model_grafana_imports(plan):
    model = json.loads(dashboard_json(plan))
    assert dashboard_json(plan) == dashboard_json(plan)  # the same spec, the same file
    assert len(model["uid"]) <= 40 and model["time"] == {"from": "now-60m", "to": "now"}
    assert [v["name"] for v in model["templating"]["list"]] == ["datasource"]
    ids, cells = set(), set()
    for panel in model["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"] == panel["datasource"] and t["refId"] for t in panel["targets"])
        grid = panel["gridPos"]
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert grid["x"] + grid["w"] <= 24 and not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        ids.add(panel["id"])
    assert len(ids) == len(model["panels"])
