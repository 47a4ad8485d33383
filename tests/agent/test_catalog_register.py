"""External services through py-consul's catalog API: nodes other than the agent's, registered
with the checks their monitor reports, read back through the catalog and health endpoints."""

from __future__ import annotations

import threading
import time

import consul
import pytest
import requests

from tests.agent.conftest import client_with_rules

pytestmark = pytest.mark.integration

TOKEN = "catalog-test-management-token"


def register_db(c: consul.Consul, status: str = "passing") -> None:
    assert c.catalog.register("rds-1", "10.9.9.9",
                              service={"Service": "db", "ID": "db-ext", "Port": 5432, "Tags": ["primary"]},
                              check={"CheckID": "db-ext-probe", "Name": "monitor", "ServiceID": "db-ext",
                                     "Status": status, "Output": "reachable"}) is True


def test_an_external_service_shows_in_the_catalog_and_health_beside_the_agents_own(agent):
    c = agent.client()
    c.agent.service.register("db", service_id="db-local", port=5433)
    register_db(c)
    _, nodes = c.catalog.nodes()
    assert [n["Node"] for n in nodes] == ["test-node", "rds-1"]
    assert nodes[1]["Address"] == "10.9.9.9"
    requests.put(f"http://{agent.address}/v1/catalog/register", timeout=5,
                 json={"Node": "rds-1", "Address": "10.9.9.9", "NodeMeta": {"external-node": "true"}})
    assert c.catalog.node("rds-1")[1]["Node"]["Meta"] == {"external-node": "true"}
    _, entries = c.catalog.service("db")
    assert [(e["Node"], e["ServiceID"], e["Address"]) for e in entries] == [
        ("test-node", "db-local", "127.0.0.1"), ("rds-1", "db-ext", "10.9.9.9")]
    _, healthy = c.health.service("db", passing=True)
    external = [e for e in healthy if e["Node"]["Node"] == "rds-1"][0]
    assert [ch["CheckID"] for ch in external["Checks"]] == ["db-ext-probe"]  # no serfHealth: not a gossip member
    assert c.catalog.node("rds-1")[1]["Services"]["db-ext"]["Port"] == 5432
    assert [ch["Output"] for ch in c.health.node("rds-1")[1]] == ["reachable"]
    assert "db-ext" not in c.agent.services()  # the agent endpoints are the local agent's
    assert c.health.service("db", tag="primary")[1][0]["Service"]["ID"] == "db-ext"


def test_a_monitor_reporting_critical_takes_the_external_instance_out_and_wakes_watchers(agent):
    c = agent.client()
    register_db(c)
    index, healthy = c.health.service("db", passing=True)
    assert len(healthy) == 1
    woke: list[tuple[float, list]] = []

    def watch() -> None:
        _, seen = c.health.service("db", passing=True, index=index, wait="10s")
        woke.append((time.monotonic(), seen))

    thread = threading.Thread(target=watch)
    thread.start()
    time.sleep(0.3)
    reported = time.monotonic()
    register_db(c, status="critical")
    thread.join(10)
    (at, seen), = woke
    assert seen == [] and at - reported < 1.0
    assert [ch["Status"] for ch in c.health.state("critical")[1]] == ["critical"]


def test_deregistering_a_check_a_service_or_the_node(agent):
    c = agent.client()
    register_db(c)
    c.catalog.register("rds-1", "10.9.9.9", service={"Service": "cache", "ID": "cache-ext", "Port": 6379})
    assert c.catalog.deregister("rds-1", check_id="db-ext-probe") is True
    assert c.health.node("rds-1")[1] == []
    assert c.catalog.deregister("rds-1", service_id="db-ext") is True
    assert c.catalog.service("db")[1] == [] and len(c.catalog.service("cache")[1]) == 1
    assert c.catalog.deregister("rds-1") is True
    assert [n["Node"] for n in c.catalog.nodes()[1]] == ["test-node"]


def test_bad_registrations_are_refused(agent):
    url = f"http://{agent.address}/v1/catalog/register"
    missing = requests.put(url, json={"Address": "10.0.0.1"}, timeout=5)
    assert (missing.status_code, missing.text) == (400, "Must provide node")
    own = requests.put(url, json={"Node": "test-node", "Address": "127.0.0.1"}, timeout=5)
    assert own.status_code == 400 and "/v1/agent/service/register" in own.text


def test_catalog_writes_need_node_and_service_write(make_agent):
    agent = make_agent(token=TOKEN)
    esm = client_with_rules(agent, TOKEN, "esm", 'node "rds-1" { policy = "write" }\nservice "db" { policy = "write" }')
    register_db(esm)
    with pytest.raises(consul.ACLPermissionDenied):
        esm.catalog.register("rds-2", "10.9.9.8")
    with pytest.raises(consul.ACLPermissionDenied):
        esm.catalog.register("rds-1", "10.9.9.9", service={"Service": "cache", "Port": 1})


def test_node_services_lists_a_nodes_services_the_token_may_read(make_agent):
    agent = make_agent(token=TOKEN)
    c = agent.client(token=TOKEN)
    c.agent.service.register("web", service_id="web-1", port=1)
    c.agent.service.register("db", service_id="db-1", port=2)
    answer = requests.get(f"http://{agent.address}/v1/catalog/node-services/test-node", headers={"X-Consul-Token": TOKEN},
                          timeout=5).json()
    assert answer["Node"]["Node"] == "test-node" and [s["ID"] for s in answer["Services"]] == ["db-1", "web-1"]
    web_reader = client_with_rules(agent, TOKEN, "web-reader", 'service "web" { policy = "read" }\nnode_prefix "" { policy = "read" }')
    seen = requests.get(f"http://{agent.address}/v1/catalog/node-services/test-node",
                        headers={"X-Consul-Token": web_reader.token}, timeout=5)
    assert [s["ID"] for s in seen.json()["Services"]] == ["web-1"] and seen.headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
    assert list(web_reader.catalog.node("test-node")[1]["Services"]) == ["web-1"]
