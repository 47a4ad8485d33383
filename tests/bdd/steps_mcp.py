"""Steps about MCP sessions through the mesh proxy (`/mcp/<name>`): handshake, tools, affinity, end."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from pytest_bdd import parsers, then, when

from meshspec.render.haproxy import backend_name
from tests.bdd.mesh_target import McpSession, result_text, wait_for


@when(parsers.parse('I open an MCP session with "{service}" through the proxy'))
def _(world, service):
    open_session(world, service, world.target.edge_headers)


@when(parsers.parse('I open an MCP session with "{service}" through the proxy as the consumer "{consumer}"'))
def _(world, service, consumer):
    key = Path(world.target.plan.layout.consumer_key_file(consumer)).read_text().strip()
    open_session(world, service, {"X-API-Key": key})


def open_session(world, service: str, headers: dict[str, str]) -> None:
    world.session = McpSession(f"{world.target.proxy_url}/mcp/{service}",
                               httpx.Client(trust_env=False, timeout=30, headers=headers))
    world.session.open()
    world.counters["service"] = service


@then(parsers.parse("calling \"{tool}\" with '{arguments}' gets {status:d} and \"{reason}\""))
def _(world, tool, arguments, status, reason):
    world.session.next_id += 1
    answer = world.session._post({"jsonrpc": "2.0", "id": world.session.next_id, "method": "tools/call",
                                  "params": {"name": tool, "arguments": json.loads(arguments)}})
    assert answer.headers.get("content-type") == "application/json", answer.text  # a JSON-RPC error
    assert (answer.status_code, answer.json()["error"]["message"]) == (status, reason)


@then("the server issued a session id")
def _(world):
    assert world.session.session_id, "no Mcp-Session-Id header on the initialize response"


@then(parsers.parse('the session lists the tool "{tool}"'))
def _(world, tool):
    assert tool in (tools := world.session.tools()), tools


@when(parsers.parse("I call \"{tool}\" with '{arguments}'"))
def _(world, tool, arguments):
    own = world.target.instances_of(world.counters["service"])[0]
    arguments = arguments.replace("{proxy_url}", world.target.proxy_url).replace("{service_url}", f"http://{own.address}:{own.port}")
    world.last = world.session.call(tool, json.loads(arguments))


@then(parsers.parse('the tool result contains "{text}"'))
def _(world, text):
    assert not world.last.get("isError") and text in result_text(world.last), world.last


@then(parsers.parse('the tool result is an error that contains "{text}"'))
def _(world, text):
    assert world.last.get("isError") and text in result_text(world.last), world.last


@then("the proxy pins the session to one instance of the service")
def _(world):
    service = world.counters["service"]
    table = world.target.runtime_api.send(f"show table {backend_name(service)}")
    entry = next((line for line in table.splitlines() if f"key={world.session.session_id} " in line), None)
    ids = {s.id for s in world.target.proxy_servers(service) if s.name in {i.id for i in world.target.instances_of(service)}}
    assert entry and any(f"server_id={i} " in entry + " " for i in ids), f"{entry!r} (planned server ids {ids})"


@when("I end the session")
def _(world):
    world.last = world.session.close()


@then("the session is gone")
def _(world):
    assert world.last in (200, 202, 204), f"DELETE answered HTTP {world.last}"
    response = world.session._post({"jsonrpc": "2.0", "id": 99, "method": "tools/list", "params": {}})
    world.session = None
    assert response.status_code == 404, f"tools/list on the ended session: HTTP {response.status_code}"


@then(parsers.parse('the task finishes with the output "{text}"'))
def _(world, text):
    assert not world.last.get("isError"), result_text(world.last)
    task_id = world.last["structuredContent"]["task_id"]
    done = wait_for(lambda: (s := world.session.call("task_status", {"task_id": task_id})["structuredContent"])["state"]
                    in ("succeeded", "failed", "timed_out", "cancelled") and s, 15)
    assert done and done["state"] == "succeeded", done
    output = world.session.call("task_output", {"task_id": task_id})["structuredContent"]
    assert output["stdout"].strip() == text, output


@then(parsers.parse('the tool call is refused with "{text}"'))
def _(world, text):
    assert world.last.get("isError") and text in result_text(world.last), world.last
    listed = world.session.call("list_tasks", {"limit": 1000})["structuredContent"]["tasks"]
    assert not [t for t in listed if t["command"][0] in ("sh", "/usr/bin/id", "python3")], "a refused task was queued"
