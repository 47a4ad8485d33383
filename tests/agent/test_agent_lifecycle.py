"""The agent's own endpoints through py-consul: metrics (JSON and Prometheus), the log monitor,
reload and leave."""

from __future__ import annotations

import threading
import time

import consul
import pytest
import requests

from tests.agent.conftest import client_with_rules

pytestmark = pytest.mark.integration

TOKEN = "lifecycle-test-management-token"


def test_metrics_count_the_state_and_time_every_request(agent):
    c = agent.client()
    c.agent.service.register("web", service_id="web-1", port=1)
    c.agent.service.register("web", service_id="web-2", port=2)
    for n in range(3):
        c.kv.put(f"k{n}", "v")
    c.catalog.register("rds-1", "10.9.9.9", service={"Service": "db", "Port": 5432})
    metrics = c.agent.metrics()
    gauges = {g["Name"]: g["Value"] for g in metrics["Gauges"]}
    assert gauges["consul.state.nodes"] == 2 and gauges["consul.state.kv_entries"] == 3
    assert (gauges["consul.state.services"], gauges["consul.state.service_instances"]) == (2, 3)
    samples = {(s["Labels"]["method"], s["Labels"]["path"]): s for s in metrics["Samples"] if s["Name"] == "consul.api.http"}
    puts = samples[("PUT", "v1_kv_")]
    assert puts["Count"] == 3 and 0 < puts["Min"] <= puts["Mean"] <= puts["Max"]
    text = requests.get(f"http://{agent.address}/v1/agent/metrics", params={"format": "prometheus"}, timeout=5).text
    assert "consul_state_kv_entries 3.0" in text
    assert 'consul_api_http_count{method="PUT",path="v1_kv_"} 3.0' in text


def test_monitor_streams_the_log_as_it_is_written(agent):
    c = agent.client()
    lines: list[str] = []
    with requests.get(f"http://{agent.address}/v1/agent/monitor", params={"loglevel": "info"}, stream=True, timeout=10) as stream:
        reader = threading.Thread(target=lambda: lines.extend(
            line for _, line in zip(range(1), stream.iter_lines(decode_unicode=True))))
        reader.start()
        time.sleep(0.3)
        sid = c.session.create(name="monitored", ttl=10)
        c.session.destroy(sid)
        reader.join(5)
    assert lines and f"session {sid} (monitored) destroyed" in lines[0] and "[INFO]" in lines[0]


def test_reload_changes_nothing_and_leave_stops_the_agent(make_agent):
    agent = make_agent(token=TOKEN)
    c = agent.client(token=TOKEN)
    c.kv.put("kept", "yes")
    reader = client_with_rules(agent, TOKEN, "agent-reader", 'agent_prefix "" { policy = "read" }')
    assert reader.agent.metrics()["Gauges"]
    for call in (reader.agent.reload, reader.agent.leave):
        with pytest.raises(consul.ACLPermissionDenied):
            call()
    c.agent.reload()
    assert c.kv.get("kept")[1]["Value"] == b"yes"  # a reload changed nothing
    c.agent.leave()
    assert agent.proc.wait(10) == 0, agent.log()[-2000:]
    assert "leaving (/v1/agent/leave)" in agent.log()
    agent.start()
    assert agent.client(token=TOKEN).kv.get("kept")[1]["Value"] == b"yes"
