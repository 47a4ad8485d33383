"""Connect's discovery endpoints through py-consul: the proxies and native instances that serve a
service (catalog and health), an ingress gateway's instances for the services it routes, and what
a gateway's config entry routes."""

from __future__ import annotations

import threading
import time

import pytest

from tests.agent.conftest import client_with_rules

pytestmark = pytest.mark.integration

TOKEN = "connect-test-management-token"


def test_a_sidecar_and_a_native_instance_serve_a_service_over_connect(agent):
    c = agent.client()
    c.agent.service.register("web", service_id="web-1", port=8080, connect={"SidecarService": {}})
    c.agent.service.register("web", service_id="web-native", port=8081, connect={"Native": True})
    c.agent.service.register("web", service_id="web-plain", port=8082)
    _, catalog = c.catalog.connect("web")
    assert sorted(e["ServiceID"] for e in catalog) == ["web-1-sidecar-proxy", "web-native"]
    _, health = c.health.connect("web")
    assert sorted(e["Service"]["ID"] for e in health) == ["web-1-sidecar-proxy", "web-native"]
    assert all(e["Node"]["Node"] == "test-node" and e["Checks"] for e in health)
    assert c.health.connect("db")[1] == []


def test_a_connect_watcher_wakes_when_a_sidecar_comes(agent):
    c = agent.client()
    c.agent.service.register("web", service_id="web-1", port=8080)
    index, before = c.health.connect("web")
    assert before == []
    woke = {}
    watcher = threading.Thread(target=lambda: woke.update(r=c.health.connect("web", index=index, wait="10s")))
    watcher.start()
    time.sleep(0.2)
    c.agent.service.register("web", service_id="web-2", port=8081, connect={"SidecarService": {}})
    watcher.join(10)
    assert [e["Service"]["ID"] for e in woke["r"][1]] == ["web-2-sidecar-proxy"]


def test_gateways_route_what_their_entries_name(agent):
    c = agent.client()
    assert c.config.set("ingress-gateway", "edge", {"Listeners": [
        {"Port": 8443, "Protocol": "http", "Services": [{"Name": "web", "Hosts": ["web.example.test"]}]},
        {"Port": 9000, "Protocol": "tcp", "Services": [{"Name": "db"}]}]})
    assert c.config.set("terminating-gateway", "egress", {"Services": [{"Name": "billing-saas", "SNI": "billing.test"}]})
    routed = c.catalog.gateway_services("edge")
    assert [(g["Service"]["Name"], g["Port"], g["Protocol"], g["GatewayKind"]) for g in routed] == [
        ("web", 8443, "http", "ingress-gateway"), ("db", 9000, "tcp", "ingress-gateway")]
    assert routed[0]["Hosts"] == ["web.example.test"]
    egress = c.catalog.gateway_services("egress")
    assert [(g["Service"]["Name"], g["SNI"], g["GatewayKind"]) for g in egress] == [("billing-saas", "billing.test", "terminating-gateway")]
    assert set(routed[0]) == set(egress[0])  # every entry carries every field, as Consul's do


def test_ingress_health_lists_the_gateways_routing_a_service(agent):
    c = agent.client()
    assert c.config.set("ingress-gateway", "edge", {"Listeners": [{"Port": 8443, "Protocol": "http",
                                                                   "Services": [{"Name": "web"}]}]})
    c.agent.service.register("edge", service_id="edge-1", port=8443, kind="ingress-gateway")
    c.agent.service.register("other-gw", service_id="other-1", port=8444, kind="ingress-gateway")
    _, entries = c.health.ingress("web")
    assert [e["Service"]["ID"] for e in entries] == ["edge-1"]
    assert c.health.ingress("db")[1] == []


def test_connect_reads_need_service_read(make_agent):
    agent = make_agent(token=TOKEN)
    c = agent.client(token=TOKEN)
    c.agent.service.register("web", service_id="web-1", port=8080, connect={"SidecarService": {}})
    db_reader = client_with_rules(agent, TOKEN, "db-reader", 'service "db" { policy = "read" }')
    assert db_reader.health.connect("web")[1] == []  # filtered, as Consul filters a list
    assert len(client_with_rules(agent, TOKEN, "web-reader", 'service_prefix "web" { policy = "read" }\n'
                                 'node_prefix "" { policy = "read" }').health.connect("web")[1]) == 1
