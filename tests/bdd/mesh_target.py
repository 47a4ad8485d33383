"""The mesh a scenario talks to, and the scenario's own state (the "world").

A ``Target`` is one mesh: the spec, state dir, port offset and hosts it was deployed with. Every
read goes through ``meshspec.verify`` (the same checks as ``meshspec verify``) or the plan; the
steps stay one line over these.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import httpx

from meshspec.converge.mesh import Mesh, load_mesh
from meshspec.plan import Instance, Runtime
from meshspec.plan.hosts import LOCAL, LOOPBACK, Host
from meshspec.render.haproxy import backend_name, config_shape, proxy_instance
from meshspec.runtime.proxy.runtime_api import RuntimeApi
from meshspec.verify.checks import Supervisor
from meshspec.verify.run import (
    CheckResult,
    VerifyRun,
    _measure,
    _start_sources,
    edge_headers,
    mesh_token,
    planned_checks,
    verify,
)
from tests.integration.meshrun import BIN, REPO, Run
from tests.integration.meshrun import Mesh as MeshRun


@dataclass
class Target:
    """One deployed mesh, as the deploy sees it (spec, state dir, offset, hosts, Consul)."""

    spec_path: str
    state_dir: str
    port_offset: int
    hosts: list[Host] = field(default_factory=lambda: [Host(LOCAL, LOOPBACK)])
    consul_addr: str | None = None  # a real Consul, else the embedded agent
    runtime: Runtime = Runtime.PROCESS
    label: str = "mesh"

    # --- the model -----------------------------------------------------------------------------

    @cached_property
    def mesh(self) -> Mesh:
        return load_mesh(self.spec_path, self.hosts, self.port_offset, self.state_dir, self.consul_addr, self.runtime)

    @property
    def plan(self):
        return self.mesh.plan

    def instance(self, instance_id: str) -> Instance:
        found = [i for i in self.plan.instances if i.id == instance_id]
        assert found, f"{instance_id} is not an instance of the plan ({len(self.plan.instances)} instances)"
        return found[0]

    def instances_of(self, service: str) -> list[Instance]:
        found = self.plan.instances_of(service)
        assert found, f"{service} has no instance in the plan"
        return found

    # --- running it ----------------------------------------------------------------------------

    @property
    def runner(self) -> MeshRun:
        return MeshRun(Path(self.state_dir), self.port_offset, Path(self.spec_path), self.runtime)

    def deploy(self, deploy: str = "deploys/mesh.py", timeout: float = 1800) -> Run:
        return self.runner.deploy(deploy, timeout=timeout)

    def verify(self) -> VerifyRun:
        return verify(self.mesh, runtime=self.runtime, spec_path=self.spec_path)

    def checks(self, service: str | None = None, check: str | None = None, subject: str | None = None) -> list[CheckResult]:
        """Only the verify checks that match (same code as `meshspec verify`), run in parallel."""
        with ThreadPoolExecutor(max_workers=32, thread_name_prefix="bdd-verify") as pool:
            sources = _start_sources(pool, self.mesh, 2.0, self.runtime)
            wanted = [p for p in planned_checks(self.mesh, sources, self.runtime)
                      if (service is None or p.service == service) and (check is None or p.check == check)
                      and (subject is None or p.subject == subject)]
            assert wanted, f"no verify check matches service={service} check={check} subject={subject}"
            return list(pool.map(_measure, wanted))

    # --- supervisord ---------------------------------------------------------------------------

    @property
    def supervisor_socket(self) -> str:
        return str(self.plan.layout.supervisor_socket)

    def supervisor(self) -> Supervisor:
        return Supervisor.read(self.supervisor_socket)

    def supervisorctl(self, *args: str) -> subprocess.CompletedProcess:
        conf = Path(self.state_dir) / "supervisor" / "supervisord.conf"
        return subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), *args], capture_output=True,
                              text=True, timeout=120)

    def kill(self, instance_id: str, sig: int = signal.SIGKILL) -> int:
        state, pid = self.supervisor().states.get(instance_id, (None, None))
        assert pid, f"{instance_id} has no running process (state {state})"
        os.kill(pid, sig)
        return pid

    # --- Consul --------------------------------------------------------------------------------

    def consul(self):
        return self.mesh.registry.client(mesh_token(self.mesh.plan), 5)  # read on the registry's host

    # --- the proxy -----------------------------------------------------------------------------

    @property
    def proxy_url(self) -> str:
        front = proxy_instance(self.plan)
        return f"http://{front.address}:{front.port}"

    @property
    def edge_headers(self) -> dict[str, str]:
        """The operator's API key, which the proxy's edge asks of every caller (verify's own)."""
        return edge_headers(self.plan)

    @property
    def runtime_api(self) -> RuntimeApi:
        return RuntimeApi(self.plan.proxy_runtime)

    def proxy_servers(self, service: str):
        return self.runtime_api.servers_state(backend_name(service))

    def proxy_stats(self, service: str) -> dict[str, dict[str, str]]:
        return stats_rows(self.runtime_api, backend_name(service))

    def served(self, service: str) -> dict[str, int]:
        """Responses each server of the service's backend has sent so far (HAProxy `show stat`)."""
        return {name: int(row.get("stot") or 0) for name, row in self.proxy_stats(service).items()
                if name not in ("FRONTEND", "BACKEND")}

    @property
    def planned_shape(self) -> dict:
        return config_shape(self.plan)

    def controller_status(self) -> dict:
        name = next(s.name for s in self.plan.spec.services
                    if s.process and s.process.command and "controller" in s.process.command)
        inst = self.plan.instances_of(name)[0]
        return httpx.get(f"http://{inst.address}:{inst.port}/health", trust_env=False, timeout=5).json()

    def routed_path(self, service: str) -> str:
        """`/svc/<name><health path>` (or `/mcp/<name>`) as the proxy routes it."""
        from meshspec.spec.resolve import effective_routing, path_prefix

        svc = self.plan.service(service)
        if svc.health.mcp:
            return f"/mcp/{service}"
        prefix = path_prefix(svc, effective_routing(self.plan.spec, svc)).rstrip("/")
        return prefix + (svc.health.http.path if svc.health.http else "/")


@dataclass
class McpSession:
    """One MCP session over Streamable HTTP: initialize, calls, DELETE."""

    url: str
    client: httpx.Client
    session_id: str | None = None
    protocol: str | None = None
    next_id: int = 0
    last_status: int | None = None

    def _post(self, message: dict) -> httpx.Response:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        if self.protocol:
            headers["MCP-Protocol-Version"] = self.protocol
        response = self.client.post(self.url, content=json.dumps(message), headers=headers)
        self.last_status = response.status_code
        self.session_id = self.session_id or response.headers.get("mcp-session-id")
        return response

    def request(self, method: str, params: dict | None = None) -> dict:
        self.next_id += 1
        response = self._post({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}})
        assert response.status_code == 200, f"{method} via {self.url}: HTTP {response.status_code} {response.text[:200]}"
        reply = reply_of(response, self.next_id)
        assert reply is not None, f"{method}: no JSON-RPC reply with id {self.next_id} in {response.text[:200]!r}"
        assert "error" not in reply, f"{method}: {reply['error']}"
        return reply["result"]

    def open(self) -> dict:
        result = self.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                             "clientInfo": {"name": "meshspec-bdd", "version": "1"}})
        self.protocol = result.get("protocolVersion")
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def tools(self) -> list[str]:
        return [t["name"] for t in self.request("tools/list").get("tools", [])]

    def call(self, tool: str, arguments: dict) -> dict:
        return self.request("tools/call", {"name": tool, "arguments": arguments})

    def close(self) -> int:
        headers = {"Mcp-Session-Id": self.session_id} if self.session_id else {}
        return self.client.delete(self.url, headers=headers).status_code


def reply_of(response: httpx.Response, rpc_id: int) -> dict | None:
    """The JSON-RPC reply with `rpc_id`, from a JSON or an SSE body."""
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        messages = body if isinstance(body, list) else [body]
    else:
        messages = [json.loads(line[5:]) for line in response.text.splitlines()
                    if line.startswith("data:") and line[5:].strip().startswith("{")]
    return next((m for m in messages if isinstance(m, dict) and m.get("id") == rpc_id), None)


def result_text(result: dict) -> str:
    parts = [c.get("text", "") for c in result.get("content", []) if c.get("type") == "text"]
    if result.get("structuredContent") is not None:
        parts.append(json.dumps(result["structuredContent"]))
    return "\n".join(parts)


def wait_for(predicate, timeout: float, interval: float = 0.1):
    """The first truthy value of `predicate` within `timeout` s, else its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def stats_rows(api: RuntimeApi, backend: str) -> dict[str, dict[str, str]]:
    """{server or "BACKEND": its row of `show stat`} for one backend, as the running HAProxy reports it."""
    lines = [line for line in api.send("show stat").splitlines() if line.strip()]
    header = lines[0].lstrip("# ").split(",")
    rows = (dict(zip(header, line.split(","))) for line in lines[1:])
    return {row["svname"]: row for row in rows if row.get("pxname") == backend}


def changed_operations(run: Run) -> list[str]:
    return run.changed_operations() if "--> Results:" in run.output else ["(no results table)"]


def validate(path: str | Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    return subprocess.run([str(BIN / "meshspec"), "validate", str(path)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


PROBLEM = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<key>\S+): (?P<message>.*)$")
