"""`Connect.SidecarService` and alias checks through py-consul: the sidecar Consul's agent registers
for a service, its default checks, and its removal with the service."""

from __future__ import annotations

import pytest
import requests

from tests.support import wait_until

pytestmark = pytest.mark.integration


def test_a_sidecar_is_registered_for_the_service_and_removed_with_it(agent):
    c = agent.client()
    answer = requests.put(f"http://{agent.address}/v1/agent/service/register", timeout=5, json={
        "Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"], "Check": {"TTL": "30s"},
        "Connect": {"SidecarService": {}}})
    assert answer.status_code == 200, answer.text
    services = c.agent.services()
    sidecar = services["web-1-sidecar-proxy"]
    assert (sidecar["Service"], sidecar["Kind"], sidecar["Port"], sidecar["Tags"]) == (
        "web-sidecar-proxy", "connect-proxy", 21000, ["v1"])
    assert "SidecarService" not in (services["web-1"].get("Connect") or {})
    _, entries = c.catalog.service("web-sidecar-proxy")
    proxy = entries[0]["ServiceProxy"]
    assert (proxy["DestinationServiceName"], proxy["DestinationServiceID"], proxy["LocalServicePort"]) == (
        "web", "web-1", 8080)

    checks = c.agent.checks()
    listening, alias = checks["service:web-1-sidecar-proxy:1"], checks["service:web-1-sidecar-proxy:2"]
    assert listening["Name"] == "Connect Sidecar Listening" and alias["Name"] == "Connect Sidecar Aliasing web-1"
    assert alias["Status"] == "critical"  # web-1's own TTL check has not passed yet
    c.agent.check.ttl_pass("service:web-1")
    assert wait_until(lambda: c.agent.checks()["service:web-1-sidecar-proxy:2"]["Status"] == "passing", 5)
    c.agent.check.ttl_warn("service:web-1")
    assert c.agent.checks()["service:web-1-sidecar-proxy:2"]["Status"] == "warning"

    # nothing listens on 21000 here, as with a real Consul and no Envoy started: its port check fails
    assert wait_until(lambda: c.agent.checks()["service:web-1-sidecar-proxy:1"]["Status"] == "critical", 15)

    c.agent.service.deregister("web-1")
    assert c.agent.services() == {} and c.agent.checks() == {}


def test_a_second_sidecar_gets_the_next_port_and_an_alias_check_can_be_registered_alone(agent):
    c = agent.client()
    for sid in ("a-1", "b-1"):
        requests.put(f"http://{agent.address}/v1/agent/service/register", timeout=5, json={
            "Name": sid.split("-")[0], "ID": sid, "Port": 1, "Connect": {"SidecarService": {}}})
    ports = {s["ID"]: s["Port"] for s in c.agent.services().values() if s.get("Kind") == "connect-proxy"}
    assert ports == {"a-1-sidecar-proxy": 21000, "b-1-sidecar-proxy": 21001}
    answer = requests.put(f"http://{agent.address}/v1/agent/check/register", timeout=5,
                          json={"Name": "a-alias", "AliasService": "nope"})
    assert answer.status_code == 200, answer.text
    assert c.agent.checks()["a-alias"]["Status"] == "critical"  # no such service
