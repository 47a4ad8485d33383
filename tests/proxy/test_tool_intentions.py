"""Tool intentions for real: HAProxy 2.6 on the rendered config, meshspec's task runner behind it,
consumers at the edge with the keys the deploy would make. The proxy reads the MCP method and tool
from each JSON-RPC body and denies a tool the intentions do not allow its caller; a body it cannot
read, or one it and the server would read apart, never runs a task."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from meshspec.render.secrets import consumer_key
from tests.proxy.harness import CA_SECRET, HAProxy, write_proxy_files
from tests.proxy.meshes import free_block, make_mesh, service
from tests.services.mcp_support import TASK_RUNNER_ARGS, ServerProcess
from tests.support import free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("haproxy") is None, reason="apt-get install haproxy")]

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    runner = service("runner", free_block(1), 1, {"affinity": "mcp_session", "tool_rate_limits": {"task_status": 2}},
                     {"mcp": {}}, kind="mcp")
    plan = make_mesh([runner], (free_port(), free_port(), free_port()), root / "state",
                     proxy={"rate_limits": {"window": "1s", "client": 1_000}},
                     consumers=[{"name": "operator"}, {"name": "ide"}, {"name": "ci", "rate_limit": 3}],
                     intentions=[{"source": "*", "destination": "runner", "tool": "submit_task", "action": "deny"},
                                 {"source": "operator", "destination": "runner", "tool": "submit_task", "action": "allow"}])
    write_proxy_files(plan)
    server = ServerProcess("mcp-task-runner", root, ["--data-dir", str(root / "tasks"), *TASK_RUNNER_ARGS],
                           port=plan.instances_of("runner")[0].port).start()
    proxy = HAProxy(plan)
    try:
        proxy.start()
        yield plan, proxy, server
    finally:
        proxy.stop()
        server.stop()


class Session:
    """One MCP session through the proxy's edge as one consumer, raw enough to send what a client
    should not."""

    def __init__(self, proxy: HAProxy, consumer: str, bearer: bool = False) -> None:
        self.url = f"{proxy.url}/mcp/runner"
        key = consumer_key(CA_SECRET, consumer)
        self.client = httpx.Client(trust_env=False, timeout=10, headers={
            **ACCEPT, **({"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key})})
        self.next_id = 0
        answer = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert answer.status_code == 200, answer.text
        self.client.headers.update({"Mcp-Session-Id": answer.headers["mcp-session-id"],
                                    "MCP-Protocol-Version": "2025-06-18"})
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202

    def post(self, message: dict | list | str, **headers: str) -> httpx.Response:
        body = message if isinstance(message, str) else json.dumps(message)
        return self.client.post(self.url, content=body, headers=headers)

    def call(self, tool: str, arguments: dict, **headers: str) -> httpx.Response:
        self.next_id += 1
        return self.post({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                          "params": {"name": tool, "arguments": arguments}}, **headers)


def refusal(answer: httpx.Response) -> tuple[int, str]:
    """The status and the JSON-RPC error's message of a refused request."""
    assert answer.headers.get("content-type") == "application/json", answer.text
    return answer.status_code, answer.json()["error"]["message"]


def tasks(session: Session) -> list[dict]:
    answer = session.call("list_tasks", {"limit": 100})
    assert answer.status_code == 200, answer.text
    reply = json.loads(next(line[5:] for line in answer.text.splitlines() if line.startswith("data:")))
    return reply["result"]["structuredContent"]["tasks"]


def test_a_tool_is_denied_to_the_callers_its_intentions_leave_out(mesh):
    _, proxy, _ = mesh
    operator, ide = Session(proxy, "operator"), Session(proxy, "ide")
    before = len(tasks(operator))
    allowed = operator.call("submit_task", {"command": ["true"]})
    assert allowed.status_code == 200 and '"task_id"' in allowed.text, allowed.text

    denied = ide.call("submit_task", {"command": ["true"]})
    assert refusal(denied) == (403, "tool intention denies ide -> runner.submit_task")
    assert len(tasks(ide)) == before + 1  # ide may still use the runner's other tools; its task never ran


def test_a_consumer_key_sent_as_a_bearer_token_is_that_consumer(mesh):
    """Alertmanager's webhook can send only an Authorization header: the edge takes the key there too."""
    _, proxy, _ = mesh
    stranger = httpx.post(f"{proxy.url}/mcp/runner", headers={**ACCEPT, "Authorization": "Bearer not-a-key"},
                          json={"jsonrpc": "2.0", "id": 0, "method": "ping"}, trust_env=False)
    assert stranger.status_code == 401, stranger.text
    operator, ide = Session(proxy, "operator", bearer=True), Session(proxy, "ide", bearer=True)
    allowed = operator.call("submit_task", {"command": ["true"]})
    assert allowed.status_code == 200 and '"task_id"' in allowed.text, allowed.text
    assert refusal(ide.call("submit_task", {"command": ["true"]})) == (403, "tool intention denies ide -> runner.submit_task")


def test_headers_that_disagree_with_the_body_are_refused(mesh):
    _, proxy, _ = mesh
    ide = Session(proxy, "ide")
    lying = ide.call("submit_task", {"command": ["true"]}, **{"Mcp-Name": "list_tasks"})
    assert refusal(lying) == (400, "the Mcp-Name header does not match the tool name of the tools/call body")
    method = ide.call("submit_task", {"command": ["true"]}, **{"Mcp-Method": "tools/list"})
    assert refusal(method) == (400, "the Mcp-Method header does not match the method of the JSON-RPC body")
    honest = ide.call("list_tasks", {}, **{"Mcp-Method": "tools/call", "Mcp-Name": "list_tasks"})
    assert honest.status_code == 200, honest.text


@pytest.mark.parametrize("body, refused_by", [
    # HAProxy's parser takes a duplicated key's first value, Python's its last: the proxy allows
    # list_tasks and tells the server so; the server reads submit_task and refuses the mismatch.
    ('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_tasks","name":"submit_task",'
     '"arguments":{"command":["true"]}}}', "runner"),
    # a key spelled with an escape, which only Python decodes to "method"
    ('{"jsonrpc":"2.0","id":8,"\\u006dethod":"tools/call","params":{"name":"submit_task",'
     '"arguments":{"command":["true"]}}}', "proxy"),
    # a batch: no method at the top
    ('[{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"submit_task","arguments":{"command":["true"]}}}]',
     "proxy"),
    # a body longer than the buffer the proxy reads
    (json.dumps({"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {
        "name": "submit_task", "arguments": {"command": ["true", "x" * 40_000]}}}), "proxy"),
], ids=["duplicate-key", "escaped-key", "batch", "over-a-buffer"])
def test_a_body_the_proxy_cannot_read_as_the_server_does_never_runs_a_task(mesh, body, refused_by):
    _, proxy, _ = mesh
    operator, ide = Session(proxy, "operator"), Session(proxy, "ide")
    before = len(tasks(operator))
    answer = ide.post(body)
    status, message = refusal(answer)
    assert status in (400, 403)
    # the runner's own check names what it parsed; the proxy's refusals are its own sentences
    assert ("does not match the tools/call body's name 'submit_task'" in message) == (refused_by == "runner"), message
    assert len(tasks(operator)) == before


def test_mcp_sessions_through_the_policed_route_still_stream(mesh):
    """The proxy waits for each POST's body on this route: a GET stream and a DELETE pass untouched."""
    _, proxy, _ = mesh
    ide = Session(proxy, "ide")
    assert ide.client.delete(ide.url).status_code in (200, 204)


def test_the_runner_checks_headers_against_the_body_itself(mesh):
    """Straight to the runner (not through the proxy): its own check, as MCP asks of servers."""
    _, _, server = mesh
    client = httpx.Client(trust_env=False, timeout=10, headers=ACCEPT)
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    answer = client.post(server.url, content=json.dumps(body), headers={"Mcp-Method": "tools/call"})
    assert answer.status_code == 400 and "does not match the body's method 'initialize'" in answer.text, answer.text
    assert client.post(server.url, content=json.dumps(body), headers={"Mcp-Method": "initialize"}).status_code == 200


def test_a_tool_and_a_consumer_have_their_own_rate_limits(mesh):
    _, proxy, _ = mesh
    operator = Session(proxy, "operator")
    statuses = [operator.call("task_status", {"task_id": "none"}).status_code for _ in range(6)]
    assert statuses[:2] == [200, 200] and 429 in statuses, statuses
    refused = operator.call("task_status", {"task_id": "none"})
    assert (refused.status_code, refused.text.strip(), refused.headers["Retry-After"]) == (429, "rate limited (tool task_status)", "1")
    assert operator.call("list_tasks", {}).status_code == 200  # the limit is the tool's, not the service's

    ci = Session(proxy, "ci")  # two requests: initialize, initialized
    statuses = [ci.call("list_tasks", {}).status_code for _ in range(4)]
    assert 429 in statuses and statuses[0] == 200, statuses
    assert operator.call("list_tasks", {}).status_code == 200  # another consumer's limit is its own
