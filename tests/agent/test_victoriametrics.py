"""Unmodified VictoriaMetrics (Debian's `victoria-metrics`) discovers scrape targets through
consul_sd_configs pointed at the agent, scrapes them, and drops a deregistered one."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest
import requests

from .conftest import Target, free_port, wait_until

pytestmark = pytest.mark.integration
VICTORIA_METRICS = "/usr/bin/victoria-metrics"
TOKEN = "vm-sd-token"
SERVICE = "demo"
METRICS = b"# HELP demo_up Whether the demo is up.\n# TYPE demo_up gauge\ndemo_up 1\n"
DISCOVERY_TIMEOUT = 30.0

CONFIG = """\
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: mesh
    scrape_interval: 1s
    consul_sd_configs:
      - server: "127.0.0.1:{agent_port}"
        token: "{token}"
        services: ["{service}"]
    relabel_configs:
      - source_labels: [__meta_consul_service]
        target_label: service
      - source_labels: [__meta_consul_service_id]
        target_label: service_id
      - source_labels: [__meta_consul_health]
        target_label: health
"""


class VictoriaMetrics:
    def __init__(self, base_url: str, log_path: Path) -> None:
        self.base_url = base_url
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def active_targets(self) -> list[dict] | None:
        try:
            body = requests.get(f"{self.base_url}/api/v1/targets", timeout=2).json()
        except (requests.RequestException, ValueError):
            return None
        return body.get("data", {}).get("activeTargets")

    def targets_by_id(self) -> dict[str, dict] | None:
        targets = self.active_targets()
        if targets is None:
            return None
        return {t["labels"].get("service_id", ""): t for t in targets}

    def up_instances(self) -> dict[str, str]:
        """instance -> value of the `up` series VictoriaMetrics scraped itself, for job mesh."""
        try:
            requests.get(f"{self.base_url}/internal/force_flush", timeout=2)  # make fresh samples searchable
            body = requests.get(f"{self.base_url}/api/v1/query", params={"query": 'up{job="mesh"}'},
                                timeout=2).json()
        except (requests.RequestException, ValueError):
            return {}
        return {r["metric"]["instance"]: r["value"][1] for r in body.get("data", {}).get("result", [])}


@pytest.fixture
def metrics_servers() -> Iterator[list[Target]]:
    servers = []
    for _ in range(3):
        server = Target()
        server.body = METRICS
        servers.append(server.start())
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def victoriametrics(tmp_path: Path, make_agent) -> Iterator[tuple]:
    if not os.access(VICTORIA_METRICS, os.X_OK):
        pytest.skip(f"{VICTORIA_METRICS} is absent: install the Debian package 'victoria-metrics' to run this test")
    agent = make_agent(token=TOKEN)
    config = tmp_path / "promscrape.yml"
    config.write_text(CONFIG.format(agent_port=agent.port, token=TOKEN, service=SERVICE))
    port = free_port()
    log_path = tmp_path / "victoria-metrics.log"
    storage = tmp_path / "vm-data"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [VICTORIA_METRICS, f"-storageDataPath={storage}", f"-httpListenAddr=127.0.0.1:{port}",
             f"-promscrape.config={config}", "-promscrape.consulSDCheckInterval=1s",
             "-promscrape.consul.waitTime=1s", "-search.latencyOffset=0s", "-search.disableCache",
             "-loggerLevel=INFO"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    vm = VictoriaMetrics(f"http://127.0.0.1:{port}", log_path)
    try:
        wait_until(lambda: _healthy(vm, proc), 30, interval=0.2)
        yield agent, vm
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(storage, ignore_errors=True)


def _healthy(vm: VictoriaMetrics, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"victoria-metrics exited with {proc.returncode}: {vm.log()}")
    try:
        return requests.get(f"{vm.base_url}/health", timeout=0.5).status_code == 200
    except requests.ConnectionError:
        return False


def _register(client, service_id: str, server: Target) -> None:
    client.agent.service.register(
        SERVICE, service_id=service_id, address="127.0.0.1", port=server.port, tags=["metrics", "v1"],
        meta={"team": "infra"},
        check=consul.Check.http(f"http://127.0.0.1:{server.port}/metrics", interval="1s", timeout="1s"),
    )


def test_consul_sd_discovers_scrapes_and_drops_targets(victoriametrics, metrics_servers):
    agent, vm = victoriametrics
    first, second, third = metrics_servers
    c = agent.client(token=TOKEN)
    _register(c, "demo-1", first)
    _register(c, "demo-2", second)
    c.agent.service.register("other", service_id="other-1", address="127.0.0.1", port=third.port)  # not in `services`

    def passing(service_ids):
        _, nodes = c.health.service(SERVICE, passing=True)
        return {n["Service"]["ID"] for n in nodes} == set(service_ids)

    try:
        wait_until(lambda: passing({"demo-1", "demo-2"}), 15, interval=0.2)

        # 1. both instances become VictoriaMetrics targets, with Consul's meta labels. VictoriaMetrics may
        #    first see them while their HTTP checks are still critical (Consul's initial status), so wait
        #    for the `health` label (copied from __meta_consul_health) to say passing on both.
        expected = {"demo-1": first, "demo-2": second}

        def discovered_passing():
            targets = vm.targets_by_id()
            if targets is None or set(targets) != set(expected):
                return targets
            return all(t["labels"].get("health") == "passing" for t in targets.values()) and targets

        targets = wait_until(discovered_passing, DISCOVERY_TIMEOUT, interval=0.5)
        for service_id, server in expected.items():
            target = targets[service_id]
            address = f"127.0.0.1:{server.port}"
            assert target["labels"]["instance"] == address
            assert target["labels"]["job"] == "mesh"
            assert target["labels"]["service"] == SERVICE
            assert target["scrapeUrl"] == f"http://{address}/metrics"
            discovered = target["discoveredLabels"]
            assert discovered["__address__"] == address
            assert discovered["__meta_consul_service"] == SERVICE
            assert discovered["__meta_consul_service_id"] == service_id
            assert discovered["__meta_consul_service_address"] == "127.0.0.1"
            assert discovered["__meta_consul_service_port"] == str(server.port)
            assert discovered["__meta_consul_node"] == "test-node"
            assert discovered["__meta_consul_tags"] == ",metrics,v1,"
            assert discovered["__meta_consul_service_metadata_team"] == "infra"
            assert discovered["__meta_consul_dc"]
            assert discovered["__meta_consul_health"] == "passing"

        # 2. VictoriaMetrics really scraped them: `up` is 1 for both, and the servers saw GET /metrics
        instances = {f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"}
        wait_until(lambda: {i: v for i, v in vm.up_instances().items() if i in instances}
                   == {i: "1" for i in instances}, DISCOVERY_TIMEOUT, interval=0.5)
        for server in (first, second):  # the agent's HTTP check also GETs /metrics: tell them apart
            assert any(method == "GET" and path == "/metrics" and headers.get("User-Agent") == "vm_promscrape"
                       for method, path, headers, _ in server.requests)
        assert third.requests == []  # "other" is not in `services`: neither discovered nor scraped

        # 3. health changes flow through the blocking health query: VictoriaMetrics 1.79 does not filter
        #    by health (like Prometheus; it has no passing-only option), it keeps the target and reports
        #    the aggregated status in __meta_consul_health (here relabeled to `health`).
        second.status = 500
        wait_until(lambda: (t := vm.targets_by_id()) and set(t) == set(expected)
                   and t["demo-2"]["labels"].get("health") == "critical"
                   and t["demo-1"]["labels"].get("health") == "passing",
                   DISCOVERY_TIMEOUT, interval=0.5)
        second.status = 200

        # 4. deregistering one instance removes it from the targets within a bounded time
        c.agent.service.deregister("demo-2")
        wait_until(lambda: (t := vm.targets_by_id()) is not None and set(t) == {"demo-1"},
                   DISCOVERY_TIMEOUT, interval=0.5)
    except AssertionError:
        print("--- victoria-metrics log ---\n" + vm.log())
        print("--- agent log ---\n" + agent.log()[-4000:])
        raise
