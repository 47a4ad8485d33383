"""Fixtures: the agent as a real subprocess on a free port, and a tiny HTTP server checks can probe."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest
import requests

from tests.support import free_port, wait_until  # noqa: F401 (used by the agent tests through this module)

MESHSPEC = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "meshspec"
READY_TIMEOUT = 15.0




class AgentProcess:
    """`meshspec agent` in a subprocess; restartable on the same port and data dir."""

    def __init__(self, data_dir: Path, token: str | None = None, extra: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.token = token
        self.extra = extra or []
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-agent.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> AgentProcess:
        cmd = [str(MESHSPEC), "agent", "--data-dir", str(self.data_dir), "--port", str(self.port),
               "--node-name", "test-node", *self.extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "MESH_AGENT_TOKEN"))}
        if self.token:
            env["MESH_AGENT_TOKEN"] = self.token
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_until(self._ready, READY_TIMEOUT)
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        try:
            return requests.get(f"http://{self.address}/v1/status/leader", timeout=0.5).status_code == 200
        except requests.ConnectionError:
            return False

    def client(self, token: str | None = None) -> consul.Consul:
        return consul.Consul(host="127.0.0.1", port=self.port, token=token)

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def client_with_rules(agent: AgentProcess, management_token: str, name: str, rules: str) -> consul.Consul:
    """A client whose token holds one policy of `rules` (HCL, as an operator writes them), made
    with the management token: what a service or an operator tool is given instead of it."""
    answer = requests.put(f"http://{agent.address}/v1/acl/policy", json={"Name": name, "Rules": rules},
                          headers={"X-Consul-Token": management_token}, timeout=5)
    assert answer.status_code == 200, answer.text
    secret = agent.client(token=management_token).acl.token.create(policies_id=[answer.json()["ID"]])["SecretID"]
    return agent.client(token=secret)


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator:
    started: list[AgentProcess] = []

    def make(token: str | None = None, extra: list[str] | None = None, name: str = "data") -> AgentProcess:
        agent = AgentProcess(tmp_path / name, token=token, extra=extra).start()
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.stop()


@pytest.fixture
def agent(make_agent) -> AgentProcess:
    return make_agent()


class Target:
    """A tiny real HTTP server: answers `status` on every path; can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self.body = b"ok"
        self.delays: list[float] = []  # seconds the next requests wait before answering, one each
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def start(self) -> Target:
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                target.requests.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
                if target.delays:
                    time.sleep(target.delays.pop(0))
                self.send_response(target.status)
                self.send_header("Content-Length", str(len(target.body)))
                self.end_headers()
                self.wfile.write(target.body)

            do_GET = do_POST = do_PUT = do_HEAD = _answer

            def log_message(self, *args) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target().start()
    yield server
    server.stop()


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    return wait_until
