"""The host's checker (meshspec-checker) against the real agent: TTL checks it renews, damping, and
what happens when it dies."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from meshspec.render.probes import HTTP, MCP, Probe
from tests.agent.conftest import MESHSPEC
from tests.probes.mcp_servers import ServerProcess, mcp_python  # noqa: F401 (a fixture)
from tests.support import wait_until

CHECKER = MESHSPEC.with_name("meshspec-checker")
CHECK_ID = "service:web-1"


def register(agent, ttl: str) -> None:
    body = {"ID": "web-1", "Name": "web", "Port": 1, "Check": {"CheckID": CHECK_ID, "TTL": ttl}}
    assert requests.put(f"http://{agent.address}/v1/agent/service/register", json=body, timeout=5).status_code == 200


def status(agent) -> tuple[str, str]:
    check = requests.get(f"http://{agent.address}/v1/agent/checks", timeout=5).json()[CHECK_ID]
    return check["Status"], check["Output"]


@pytest.fixture
def start_checker(tmp_path: Path):
    started: list[subprocess.Popen] = []

    def start(agent, url: str, interval_ms: int, timeout_ms: int, failures_before_critical: int,
              probe: Probe | None = None, *options: str) -> subprocess.Popen:
        probe = probe or Probe(HTTP, url)
        check = {"check_id": CHECK_ID, "probe": dataclasses.asdict(probe), "interval_ms": interval_ms,
                 "timeout_ms": timeout_ms, "success_before_passing": 1,
                 "failures_before_critical": failures_before_critical}
        checks = tmp_path / "checks.json"
        checks.write_text(json.dumps({"consul": agent.address, "checks": [check]}))
        with open(tmp_path / "checker.log", "ab") as log:
            proc = subprocess.Popen([str(CHECKER), "--checks", str(checks), *options], stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(10)


def test_a_checker_that_dies_turns_its_checks_critical_within_the_ttl(agent, target, start_checker):
    register(agent, ttl="3s")
    checker = start_checker(agent, target.url, interval_ms=500, timeout_ms=1000, failures_before_critical=3)
    assert wait_until(lambda: status(agent)[0] == "passing", 15), status(agent)
    assert "answered HTTP 200" in status(agent)[1]

    checker.send_signal(signal.SIGKILL)
    checker.wait(10)
    died = time.monotonic()
    # Nobody renews the TTL now: the check must not stay passing (3 s TTL, 1 s for the agent's timer).
    assert wait_until(lambda: status(agent)[0] == "critical", 4), status(agent)
    assert time.monotonic() - died >= 2, "turned critical before its TTL could run out"
    assert status(agent)[1] == "TTL expired"


def test_one_timed_out_probe_does_not_turn_a_check_critical(agent, target, start_checker):
    register(agent, ttl="5s")
    start_checker(agent, target.url, interval_ms=1000, timeout_ms=300, failures_before_critical=3)
    assert wait_until(lambda: status(agent)[0] == "passing", 15), status(agent)

    target.delays = [1.0]  # the next probe times out, the ones after it answer at once
    seen = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        seen.append(status(agent))
        time.sleep(0.05)
    assert any("(1 so far)" in output for _, output in seen), "the slow probe never happened"
    assert {s for s, _ in seen} == {"passing"}, [s for s in seen if s[0] != "passing"]

    target.status = 500  # failures in a row past the threshold do turn it critical
    assert wait_until(lambda: status(agent)[0] == "critical", 6), status(agent)
    assert "answered HTTP 500" in status(agent)[1]


def test_an_mcp_check_keeps_one_session_and_ends_it_when_the_checker_stops(agent, start_checker, mcp_python, tmp_path):
    server = ServerProcess(mcp_python, "mcp_server.py", "--tools", "3", log_dir=tmp_path).start().wait_listening()
    try:
        register(agent, ttl="5s")
        checker = start_checker(agent, server.url, interval_ms=300, timeout_ms=2000, failures_before_critical=3,
                                probe=Probe(MCP, server.url, min_tools=3))
        assert wait_until(lambda: "on the session kept since" in status(agent)[1], 15), status(agent)
        assert status(agent)[0] == "passing"
        assert server.live_sessions() == 1  # one session, however many intervals have passed
        time.sleep(1.0)
        assert server.live_sessions() == 1

        checker.send_signal(signal.SIGTERM)
        assert checker.wait(10) == 0
        assert server.live_sessions() == 0  # the checker ended its session on the way out
    finally:
        server.stop()


def test_the_checker_writes_each_probe_and_status_for_nodes_textfile_collector(agent, target, start_checker, tmp_path):
    """Its metrics file (for node-exporter's textfile collector, which the live mesh's BDD reads
    through Prometheus) follows what it reports: passing, then critical once the target fails."""
    register(agent, ttl="5s")
    metrics = tmp_path / "metrics" / "checker.prom"
    start_checker(agent, target.url, 500, 1000, 1, None, "--metrics-dir", str(metrics.parent))

    def sample(name: str, **labels: str) -> float | None:
        if not metrics.exists():
            return None
        wanted = ",".join(f'{k}="{v}"' for k, v in {"check_id": CHECK_ID, **labels}.items())
        for line in metrics.read_text().splitlines():
            if line.startswith(f"{name}{{{wanted}}} "):
                return float(line.split()[-1])
        return None

    wait_until(lambda: (sample("meshspec_checker_probes_total", result="ok") or 0) >= 2, 15, what="ok probes written")
    assert sample("meshspec_checker_check_passing") == 1 and status(agent)[0] == "passing"
    assert sample("meshspec_checker_probe_duration_seconds_count") >= 2
    target.status = 500
    wait_until(lambda: sample("meshspec_checker_check_passing") == 0, 15, what="critical written")
    assert status(agent)[0] == "critical" and sample("meshspec_checker_probes_total", result="failed") >= 1
