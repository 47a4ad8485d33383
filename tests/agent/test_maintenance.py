"""Maintenance mode through py-consul: the operator's drain of a node or of one service."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.integration


def register(c, service_id: str) -> None:
    c.agent.service.register("web", service_id=service_id, port=80)


def passing_ids(c) -> list[str]:
    return sorted(e["Service"]["ID"] for e in c.health.service("web", passing=True)[1])


def test_a_service_in_maintenance_leaves_the_healthy_set_until_it_is_disabled(agent):
    c = agent.client()
    register(c, "web-1")
    register(c, "web-2")
    assert passing_ids(c) == ["web-1", "web-2"]
    assert c.agent.service.maintenance("web-1", True, reason="kernel upgrade") is True
    assert passing_ids(c) == ["web-2"]
    check = c.agent.checks()["_service_maintenance:web-1"]
    assert (check["Status"], check["Notes"], check["Name"], check["ServiceID"]) == (
        "critical", "kernel upgrade", "Service Maintenance Mode", "web-1")
    assert c.agent.service.maintenance("web-1", True, reason="another reason") is True
    assert c.agent.checks()["_service_maintenance:web-1"]["Notes"] == "kernel upgrade"  # the first reason stays
    assert c.agent.service.maintenance("web-1", False) is True
    assert passing_ids(c) == ["web-1", "web-2"] and "_service_maintenance:web-1" not in c.agent.checks()


def test_node_maintenance_takes_every_service_out_with_the_default_reason(agent):
    c = agent.client()
    register(c, "web-1")
    assert c.agent.maintenance(True) is True
    assert passing_ids(c) == []
    assert c.agent.checks()["_node_maintenance"]["Notes"] == (
        "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.")
    assert c.agent.maintenance(False) is True
    assert passing_ids(c) == ["web-1"]


@pytest.mark.parametrize(("path", "status", "text"), [
    ("/v1/agent/maintenance", 400, "Missing value for enable"),
    ("/v1/agent/maintenance?enable=yes", 400, 'Invalid value for enable: "yes"'),
    ("/v1/agent/service/maintenance/nope?enable=true", 404, 'No service registered with ID "nope"'),
])
def test_bad_maintenance_requests_answer_as_consul(agent, path, status, text):
    answer = requests.put(f"http://{agent.address}{path}", timeout=5)
    assert (answer.status_code, answer.text) == (status, text)


def test_maintenance_needs_write_permission(make_agent):
    agent = make_agent(token="maintenance-token")
    denied = requests.put(f"http://{agent.address}/v1/agent/maintenance?enable=true", timeout=5)
    assert denied.status_code == 403 and "node:write" in denied.text
    assert "_node_maintenance" not in agent.client(token="maintenance-token").agent.checks()
