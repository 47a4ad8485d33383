"""Prometheus's Consul SD conversation, replayed step by step against the agent.

This follows discovery/consul/consul.go (Prometheus 2.42) and the Consul Go API client it uses: the
exact requests (agent/self for the datacenter, blocking catalog/services and health/service/:name
with index, wait=120000ms, stale, dc, X-Consul-Token), the header parsing (X-Consul-Index as a
uint64, X-Consul-LastContact, X-Consul-KnownLeader) and the target building. It complements
test_prometheus.py, which needs a Prometheus binary built with Consul SD.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

pytestmark = pytest.mark.integration
TOKEN = "prom-token"


class ConsulSD:
    """The calls Prometheus's Consul discoverer makes, with the Go client's response checks."""

    def __init__(self, address: str) -> None:
        self.base = f"http://{address}"
        self.session = requests.Session()
        self.session.headers["X-Consul-Token"] = TOKEN

    def get(self, path: str, index: int = 0, **params):
        query = {"dc": self.dc, "stale": "", **params} if path != "/v1/agent/self" else {}
        if index:
            query.update(index=str(index), wait="120000ms")
        response = self.session.get(self.base + path, params=query, timeout=130)
        assert response.status_code == 200, response.text
        last_index = int(response.headers["X-Consul-Index"])  # Go: strconv.ParseUint, must be present
        assert 0 < last_index < 2**64
        assert int(response.headers["X-Consul-LastContact"]) >= 0
        assert response.headers["X-Consul-KnownLeader"] == "true"
        return last_index, response.json()

    def datacenter(self) -> str:
        self.dc = ""
        _, info = self.get("/v1/agent/self")
        self.dc = info["Config"]["Datacenter"]
        assert isinstance(self.dc, str) and self.dc
        return self.dc

    @staticmethod
    def targets(entries) -> set[str]:
        """Prometheus's __address__: the service address, else the node's, with the service port."""
        out = set()
        for entry in entries:
            node, service, checks = entry["Node"], entry["Service"], entry["Checks"]
            assert {"ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta"} <= set(node)
            assert all(isinstance(v, str) for v in node["TaggedAddresses"].values())
            assert {"ID", "Service", "Tags", "Address", "Meta", "Port", "Weights"} <= set(service)
            assert all(c["Status"] in ("passing", "warning", "critical") for c in checks)
            out.add(f"{service['Address'] or node['Address']}:{service['Port']}")
        return out


def test_prometheus_consul_sd_sequence(make_agent):
    agent = make_agent(token=TOKEN)
    c = agent.client(token=TOKEN)
    sd = ConsulSD(agent.address)
    assert sd.datacenter() == "dc1"

    c.agent.service.register("api", service_id="api-1", address="127.0.0.1", port=9100)
    index, services = sd.get("/v1/catalog/services")
    assert services == {"api": []}
    service_index, entries = sd.get("/v1/health/service/api")
    assert sd.targets(entries) == {"127.0.0.1:9100"}

    # A watch in flight, as Prometheus keeps one per service: the change must end it promptly.
    result = {}
    watcher = threading.Thread(target=lambda: result.update(
        zip(("index", "entries"), sd.get("/v1/health/service/api", index=service_index))))
    watcher.start()
    time.sleep(0.3)
    c.agent.service.register("api", service_id="api-2", port=9200)  # no address: node address is used
    watcher.join(5)
    assert result["index"] > service_index
    assert sd.targets(result["entries"]) == {"127.0.0.1:9100", "127.0.0.1:9200"}

    # Removing a service shows on the catalog watch; Prometheus then clears its target group.
    index, _ = sd.get("/v1/catalog/services")
    catalog = {}
    watcher = threading.Thread(target=lambda: catalog.update(
        zip(("index", "services"), sd.get("/v1/catalog/services", index=index))))
    watcher.start()
    time.sleep(0.3)
    c.agent.service.register("db", service_id="db-1", port=5432)
    watcher.join(5)
    assert set(catalog["services"]) == {"api", "db"}
    c.agent.service.deregister("db-1")
    _, services = sd.get("/v1/catalog/services", index=catalog["index"])
    assert set(services) == {"api"}
