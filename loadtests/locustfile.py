"""Load on the mesh through its proxy, with SLOs that set the exit code.

Users:
* ``HttpServiceUser``: GET ``/svc/<name><first page of its probe>`` spread over every routed http service.
* ``McpSessionUser``: one MCP session per task through ``/mcp/<name>``: initialize,
  notifications/initialized, tools/list, one offline-safe tools/call, DELETE the session.

The target (the proxy's address) and the routes come from the spec and the settings
(MESH_SPEC, MESH_PORT_OFFSET, MESH_STATE_DIR, MESH_HOSTS): no port is written here.

    locust -f loadtests/locustfile.py                      # web UI
    locust -f loadtests/locustfile.py --headless -u 20 -r 5 -t 60s \\
        --csv reports/locust --html reports/locust.html    # headless, SLOs set the exit code

SLOs: ``loadtests/slo.yaml`` (or ``--slo-file`` / ``LOCUST_SLO_FILE``); a missed SLO prints one
line and makes locust exit 1.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

from locust import HttpUser, between, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcp_wire import PROTOCOL_VERSION, initialize, post_headers, reply  # noqa: E402
from slo import check_slos, load_slos, summary  # noqa: E402

from meshspec.common import nonce  # noqa: E402
from meshspec.converge.mesh import configured_mesh  # noqa: E402
from meshspec.render.haproxy import proxy_instance, routed_services  # noqa: E402
from meshspec.spec.resolve import path_prefix  # noqa: E402
from meshspec.verify.run import edge_headers  # noqa: E402

HERE = Path(__file__).resolve().parent

#: Offline-safe tool calls (tests/data/mcp_upstreams/calls.yaml and the project's own servers):
#: service -> (tool, arguments, a substring the result must contain). "{proxy_url}" is substituted.
MCP_CALLS = {
    "sequentialthinking": ("sequentialthinking", {"thought": "Check the mesh", "nextThoughtNeeded": False,
                                                  "thoughtNumber": 1, "totalThoughts": 1}, "thoughtHistoryLength"),
    "files": ("write_file", {"path": "loadtest.txt", "content": "hello mesh"}, "Successfully wrote"),
    "knowledge-graph-mcp": ("read_graph", {}, "entities"),
    "memory-bank-mcp": ("list_projects", {}, ""),
    "http": ("http_get", {"url": "{proxy_url}/healthz"}, "200"),
    "claude-task-runner": ("list_tasks", {"limit": 5}, "count"),
}


def _mesh_routes():
    mesh = configured_mesh()
    plan = mesh.plan
    front = proxy_instance(plan)
    http_paths, mcp_services = {}, []
    for service, routing in routed_services(plan):
        if service.health.mcp:
            mcp_services.append(service.name)
        elif service.health.http:
            # The page every liveness read asks (HAProxy's check, verify's route), placeholders filled:
            # it stores nothing, so a load of it changes nothing (a probe's main read may want an
            # object only its own before-step stored).
            page = plan.render_once(service.name, service.health.http.first_page.path, **{nonce.NAME: "locust"})
            http_paths[service.name] = path_prefix(service, routing).rstrip("/") + page
    return (f"http://{front.address}:{front.port}", http_paths, [s for s in MCP_CALLS if s in mcp_services],
            edge_headers(plan))


# EDGE: the operator's API key, which the proxy's edge asks of every request (where the spec has consumers)
PROXY_URL, HTTP_PATHS, MCP_SERVICES, EDGE = _mesh_routes()


@events.init_command_line_parser.add_listener
def _(parser):
    parser.add_argument("--slo-file", env_var="LOCUST_SLO_FILE", default=str(HERE / "slo.yaml"),
                        help="SLO thresholds (p99 ms, failure ratio) per user class and overall")


@events.quitting.add_listener
def _(environment, **_kw):
    options = environment.parsed_options
    slos = load_slos(options.slo_file if options else str(HERE / "slo.yaml"))
    prefixes = {"HttpServiceUser": "http ", "McpSessionUser": "mcp "}
    for line in summary(environment.stats, prefixes):
        print(line, file=sys.stderr)
    missed = check_slos(environment.stats, slos, prefixes)
    for line in missed:
        print(f"SLO missed: {line}", file=sys.stderr)
    if missed:
        environment.process_exit_code = 1
    else:
        print(f"SLOs met ({len(slos.get('classes', {}))} user classes and overall)", file=sys.stderr)


class HttpServiceUser(HttpUser):
    """GETs the first page of every routed http service's probe, through the proxy, round the list."""

    host = PROXY_URL
    weight = 3
    wait_time = between(0.05, 0.3)

    def on_start(self):
        self.client.headers.update(EDGE)
        names = list(HTTP_PATHS)
        random.shuffle(names)
        self.order = itertools.cycle(names)

    @task
    def get_service(self):
        name = next(self.order)
        self.client.get(HTTP_PATHS[name], name=f"http /svc/{name}")


class McpSessionUser(HttpUser):
    """One whole MCP session per task, through /mcp/<name>, always ended with DELETE."""

    host = PROXY_URL
    weight = 1
    wait_time = between(0.1, 0.5)

    def on_start(self):
        self.client.headers.update(EDGE)

    @task
    def session(self):
        service = random.choice(MCP_SERVICES)
        path, sid = f"/mcp/{service}", None
        try:
            sid, version = self._initialize(path, service)
            if sid is None:
                return
            headers = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": version}
            self._post(path, f"mcp {service} initialized", {"jsonrpc": "2.0", "method": "notifications/initialized"},
                       headers, expect_reply=False)
            self._post(path, f"mcp {service} tools/list", {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers)
            tool, args, expect = MCP_CALLS[service]
            args = json.loads(json.dumps(args).replace("{proxy_url}", PROXY_URL))
            self._post(path, f"mcp {service} tools/call {tool}",
                       {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": tool, "arguments": args}},
                       headers, expect=expect)
        finally:
            if sid:
                with self.client.delete(path, headers={"Mcp-Session-Id": sid}, name=f"mcp {service} DELETE",
                                        catch_response=True) as r:
                    if r.status_code not in (200, 202, 204):
                        r.failure(f"DELETE answered HTTP {r.status_code}")

    def _initialize(self, path, service):
        answer, response = self._post(path, f"mcp {service} initialize", initialize("meshspec-locust"), {})
        if answer is None:
            return None, None
        sid = response.headers.get("mcp-session-id")
        return sid, answer["result"].get("protocolVersion", PROTOCOL_VERSION)

    def _post(self, path, name, body, headers, expect_reply=True, expect=""):
        with self.client.post(path, data=json.dumps(body), headers=post_headers(**headers), name=name,
                              catch_response=True) as r:
            if not expect_reply:
                if r.status_code not in (200, 202, 204):
                    r.failure(f"HTTP {r.status_code}")
                return None, r
            answer = reply(r.headers.get("content-type", ""), r.text or "", body.get("id"))
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:120]}")
            elif answer is None:
                r.failure(f"no JSON-RPC reply with id {body.get('id')}: {r.text[:120]}")
            elif "error" in answer:
                r.failure(f"JSON-RPC error {answer['error']}")
            elif answer.get("result", {}).get("isError"):
                r.failure(f"tool error: {json.dumps(answer['result'])[:160]}")
            elif expect and expect not in json.dumps(answer.get("result")):
                r.failure(f"result lacks {expect!r}: {json.dumps(answer.get('result'))[:160]}")
            else:
                return answer, r
            return None, r


# A spec without routed http services or without the MCP services above: no such users.
if not HTTP_PATHS:
    del HttpServiceUser
if not MCP_SERVICES:
    del McpSessionUser

