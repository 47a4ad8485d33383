"""Unmodified Prometheus discovers targets through consul_sd_configs pointed at the agent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from .conftest import free_port

pytestmark = pytest.mark.integration
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
TOKEN = "prom-sd-token"

CONFIG = """\
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: mesh
    scrape_interval: 1s
    consul_sd_configs:
      - server: "127.0.0.1:{agent_port}"
        token: "{token}"
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__meta_consul_service]
        target_label: service
"""


@pytest.fixture
def prometheus(tmp_path: Path, make_agent):
    if not shutil.which(PROMETHEUS):
        pytest.skip(f"{PROMETHEUS} is absent: install the Debian package 'prometheus' to run this test")
    agent = make_agent(token=TOKEN)
    config = tmp_path / "prometheus.yml"
    config.write_text(CONFIG.format(agent_port=agent.port, token=TOKEN))
    _skip_without_consul_sd(config)
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    yield agent, f"http://127.0.0.1:{port}", tmp_path / "prometheus.log"
    proc.terminate()
    proc.wait(15)
    log.close()


def _skip_without_consul_sd(config: Path) -> None:
    """Debian's prometheus (2.42.0+ds) is built without Consul SD ("Disable Consul SD until its Debian
    package is back in shape"): such a binary cannot run this test, whatever the agent does."""
    promtool = shutil.which(PROMTOOL)
    if not promtool:
        return
    check = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=30)
    if "consul_sd_configs not found" in check.stdout + check.stderr:
        pytest.skip(f"{PROMETHEUS} was built without consul_sd_configs (Debian disables Consul SD): "
                    "needs a Prometheus build with Consul SD")


def active_targets(base_url: str) -> set[tuple[str, str]] | None:
    try:
        data = requests.get(f"{base_url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
    except (requests.RequestException, KeyError, ValueError):
        return None
    return {(t["labels"].get("service", ""), t["labels"]["instance"]) for t in data}


def test_registered_targets_appear_and_deregistered_disappear(prometheus, target, wait_until):
    agent, base_url, log = prometheus
    c = agent.client(token=TOKEN)
    c.agent.service.register("api", service_id="api-1", address="127.0.0.1", port=target.port, tags=["metrics"])
    c.agent.service.register("api", service_id="api-2", address="127.0.0.1", port=target.port + 1)
    c.agent.service.register("db", service_id="db-1", port=9187)  # no address: Consul SD uses the node's

    expected = {("api", f"127.0.0.1:{target.port}"), ("api", f"127.0.0.1:{target.port + 1}"), ("db", "127.0.0.1:9187")}
    try:
        wait_until(lambda: active_targets(base_url) == expected, 40, interval=0.5)
        c.agent.service.deregister("api-2")
        c.agent.service.deregister("db-1")
        wait_until(lambda: active_targets(base_url) == {("api", f"127.0.0.1:{target.port}")}, 40, interval=0.5)
    except AssertionError:
        print(log.read_text()[-3000:])
        raise
