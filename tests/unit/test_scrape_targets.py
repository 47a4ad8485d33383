"""Prometheus' targets from the registry (runtime.proxy.scrape_targets), from the registrations
the deploy writes (render.registrations): pure, no registry."""

from pathlib import Path

from meshspec.plan import Runtime, make_plan
from meshspec.plan.hosts import Host
from meshspec.render.registrations import registration
from meshspec.runtime.proxy.scrape_targets import bearer_token, target_groups
from meshspec.spec import load_spec

REPO = Path(__file__).resolve().parents[2]


def catalog_of(bodies: list[dict], node_address: str = "127.0.0.1") -> dict[str, list[dict]]:
    """Registrations as `/v1/catalog/service/<name>` lists them."""
    catalog: dict[str, list[dict]] = {}
    for body in bodies:
        catalog.setdefault(body["Name"], []).append(
            {"ServiceID": body["ID"], "ServiceAddress": body.get("Address", ""), "Address": node_address,
             "ServicePort": body.get("Port"), "ServiceMeta": body.get("Meta", {})})
    return catalog


def test_every_instance_that_declares_metrics_is_a_target_and_no_other(tmp_path):
    plan = make_plan(load_spec(REPO / "mesh_spec.yaml"), [Host("@local", "127.0.0.1")], port_offset=20000,
                     state_dir=str(tmp_path))
    groups = target_groups(catalog_of([registration(plan, i, Runtime.PROCESS) for i in plan.instances]), "meshspec")
    wanted = {i.id for s in plan.spec.services if s.metrics for i in plan.instances_of(s.name)}
    assert {g["labels"]["instance_id"] for g in groups} == wanted
    proxy = next(g for g in groups if g["labels"]["job"] == "mesh-proxy")
    assert proxy["targets"] == [f"127.0.0.1:{plan.instances_of('mesh-proxy')[0].ports['stats']}"]
    assert proxy["labels"] == {"job": "mesh-proxy", "__metrics_path__": "/metrics", "kind": "core",
                               "host": "local", "mesh": "meshspec",
                               "instance_id": plan.instances_of("mesh-proxy")[0].id}


def test_an_instance_registered_by_hand_is_a_target_and_another_mesh_is_not():
    catalog = {"exporter": [
        {"ServiceID": "by-hand", "ServiceAddress": "", "Address": "::1",
         "ServiceMeta": {"metrics-port": "9100", "metrics-path": "/probe/metrics"}},
        {"ServiceID": "theirs", "ServiceAddress": "127.0.0.2", "ServiceMeta": {"metrics-port": "9100", "mesh": "other"}},
        {"ServiceID": "no-metrics", "ServiceAddress": "127.0.0.3", "ServiceMeta": {}},
    ]}
    assert target_groups(catalog, "meshspec") == [{"targets": ["[::1]:9100"], "labels": {
        "job": "exporter", "__metrics_path__": "/probe/metrics", "instance_id": "by-hand", "mesh": "meshspec"}}]


def test_a_path_s_query_becomes_parameters_and_a_service_filter_keeps_its_services_alone():
    catalog = {"consul": [{"ServiceID": "consul-local-0", "ServiceAddress": "127.0.0.1",
                           "ServiceMeta": {"metrics-port": "8500", "metrics-path": "/v1/agent/metrics?format=prometheus"}}],
               "web": [{"ServiceID": "web-0", "ServiceAddress": "127.0.0.1", "ServiceMeta": {"metrics-port": "80"}}]}
    (agent,) = target_groups(catalog, None, services=["consul"])
    assert agent["labels"] == {"job": "consul", "__metrics_path__": "/v1/agent/metrics",
                               "__param_format": "prometheus", "instance_id": "consul-local-0"}
    assert [g["labels"]["job"] for g in target_groups(catalog, None)] == ["consul", "web"]


def test_the_token_is_the_bearer_credential_only():
    assert bearer_token("Bearer abc-123") == "abc-123"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic dXNlcjpwYXNz") is None
    assert bearer_token(None) is None and bearer_token("Bearer ") is None
