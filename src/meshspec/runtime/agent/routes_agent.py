"""/v1/agent/*: the local agent's services, checks, self and members, and its lifecycle (reload,
leave) and telemetry (metrics, monitor: telemetry.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from meshspec.runtime.agent import VERSION, render
from meshspec.runtime.agent.acl import AGENT_TOKEN_KINDS
from meshspec.runtime.agent.blocking import on_topics
from meshspec.runtime.agent.checks import truncate
from meshspec.runtime.agent.definitions import (
    STATUSES,
    normalize,
    parse_check_registration,
    parse_service,
    safe_parse,
    sidecar_for,
)
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.filter import compile_filter
from meshspec.runtime.agent.http import agent_of, blocking_reply, json_reply, read_json
from meshspec.runtime.agent.routes_catalog import Visible, check_visible
from meshspec.runtime.agent.store import service_topic
from meshspec.runtime.agent.telemetry import LEVELS, log_line, state_gauges

routes = web.RouteTableDef()
CHECK_BUF_SIZE = 4096
MONITOR_BUFFER = 1024  # log lines a slow monitor client may fall behind by


def _ok() -> web.Response:
    return web.Response(status=200, text="", content_type="text/plain")


def _filtered_map(request: web.Request, items: dict[str, Any], visible: Visible) -> tuple[dict[str, Any], bool]:
    """_readable's rule (ACLs first, then ?filter=) for a map of ID -> entry."""
    predicate = compile_filter(request.query.get("filter"))  # a bad filter is a 400 for any token
    readable = {k: v for k, v in items.items() if visible(v)}
    filtered = len(readable) < len(items)
    return ({k: v for k, v in readable.items() if predicate(v)} if predicate else readable), filtered


@routes.get("/v1/agent/self")
async def self_info(request: web.Request) -> web.Response:
    agent = agent_of(request)
    request["identity"].require("agent", "read", agent.config.node_name)
    config = {
        "Datacenter": agent.config.datacenter,
        "PrimaryDatacenter": agent.config.datacenter,
        "NodeName": agent.config.node_name,
        "NodeID": agent.store.node_id,
        "Revision": "meshspec",
        "Server": True,
        "Version": VERSION,
        "BuildDate": "2026-01-01T00:00:00Z",
    }
    return json_reply({
        "Config": config,
        "DebugConfig": {**config, "ACLsEnabled": agent.acl.enabled, "EnableScriptChecks": agent.config.enable_script_checks},
        "Coord": render.coordinate(),
        "Member": render.member(agent),
        "Stats": {"agent": {"checks": str(len(agent.store.checks)), "services": str(len(agent.store.services))},
                  "consul": {"server": "true", "leader": "true", "leader_addr": render.leader_addr(agent),
                             "bootstrap": "true", "known_datacenters": "1",
                             "acl": "enabled" if agent.acl.enabled else "disabled"}},
        "Meta": {"consul-network-segment": ""},
        "xDS": {"SupportedProxies": {}, "Port": -1, "Ports": {"Plaintext": -1, "TLS": -1}},
    })


@routes.get("/v1/agent/members")
async def members(request: web.Request) -> web.Response:
    if not request["identity"].can("node", "read", agent_of(request).config.node_name):
        return json_reply([], filtered=True)
    wan = request.query.get("wan", "").lower() not in ("", "0", "false")
    return json_reply([render.member(agent_of(request), wan=wan)])


@routes.get("/v1/agent/services")
async def services(request: web.Request) -> web.Response:
    agent = agent_of(request)

    def compute():
        items = {sid: render.agent_service(agent, s) for sid, s in sorted(agent.store.services.items())}
        items, filtered = _filtered_map(request, items, lambda v: request["identity"].can("service", "read", v["Service"]))
        return agent.store.topic_index("services"), items, filtered

    return await blocking_reply(request, on_topics("services"), compute)


@routes.get("/v1/agent/service/{service_id:(?!register$)[^/]+}")  # GET .../register must be a 405
async def service(request: web.Request) -> web.Response:
    agent = agent_of(request)
    service_id = request.match_info["service_id"]
    current = agent.store.services.get(service_id)
    if current is None:
        raise ConsulError(404, f"unknown service ID: {service_id}")
    request["identity"].require("service", "read", current["Service"])

    def compute():
        found = agent.store.services.get(service_id)
        data = render.agent_service(agent, found) if found else None
        return found["ModifyIndex"] if found else agent.store.index, data, False

    return await blocking_reply(request, on_topics(service_topic(current["Service"])), compute)


@routes.get("/v1/agent/checks")
async def checks(request: web.Request) -> web.Response:
    agent = agent_of(request)

    def compute():
        items = {c["CheckID"]: render.health_check(agent, c) for c in render.sorted_checks(agent)}
        items, filtered = _filtered_map(request, items, check_visible(request))
        return agent.store.topic_index("checks"), items, filtered

    return await blocking_reply(request, on_topics("checks"), compute)


@routes.put("/v1/agent/service/register")
async def register_service(request: web.Request) -> web.Response:
    agent = agent_of(request)
    body = read_json(await request.read())
    service, checks = safe_parse(parse_service, body, agent.config.enable_script_checks)
    request["identity"].require("service", "write", service["Service"])
    replace = request.query.get("replace-existing-checks", "").lower() in ("1", "true")
    sidecar = None
    if "SidecarService" in service["Connect"]:
        # Consul registers the sidecar as a service of its own and keeps no SidecarService on the parent.
        connect = dict(service["Connect"])
        raw = connect.pop("SidecarService")
        service = {**service, "Connect": connect}
        taken = {s["Port"] for s in agent.store.services.values()
                 if s["Kind"] == "connect-proxy" and s["ID"] != f"{service['ID']}-sidecar-proxy"}
        sidecar = safe_parse(sidecar_for, service, raw, taken)
        request["identity"].require("service", "write", sidecar[0]["Service"])
    agent.register_service(service, checks, replace)
    if sidecar is not None:
        agent.register_service(*sidecar, replace)
    return _ok()


@routes.put("/v1/agent/service/deregister/{service_id}")
async def deregister_service(request: web.Request) -> web.Response:
    agent = agent_of(request)
    service = agent.service(request.match_info["service_id"])
    request["identity"].require("service", "write", service["Service"])
    agent.deregister_service(service["ID"])
    return _ok()


def _enable(request: web.Request) -> bool:
    """?enable= as Go's strconv.ParseBool reads it (Consul's maintenance endpoints)."""
    raw = request.query.get("enable", "")
    if not raw:
        raise ConsulError(400, "Missing value for enable")
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if raw in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ConsulError(400, f'Invalid value for enable: "{raw}"')


@routes.put("/v1/agent/token/{kind}")
async def agent_token(request: web.Request) -> web.Response:
    agent = agent_of(request)
    if not agent.acl.enabled:
        raise ConsulError(401, "ACL support disabled")
    request["identity"].require("agent", "write", agent.config.node_name)
    kind = request.match_info["kind"]
    if kind not in AGENT_TOKEN_KINDS:
        raise ConsulError(404, f'Token "{kind}" is unknown')
    body = read_json(await request.read())
    token = next((v for k, v in body.items() if k.lower() == "token"), "") if isinstance(body, dict) else ""
    agent.acl.agent_tokens["agent_recovery" if kind == "agent_master" else kind] = str(token or "")
    return _ok()


@routes.put("/v1/agent/maintenance")
async def node_maintenance(request: web.Request) -> web.Response:
    agent = agent_of(request)
    enable = _enable(request)
    request["identity"].require("node", "write", agent.config.node_name)
    agent.set_maintenance(enable, request.query.get("reason", ""))
    return _ok()


@routes.put("/v1/agent/service/maintenance/{service_id}")
async def service_maintenance(request: web.Request) -> web.Response:
    agent = agent_of(request)
    enable = _enable(request)
    service_id = request.match_info["service_id"]
    service = agent.store.services.get(service_id)
    if service is not None:
        request["identity"].require("service", "write", service["Service"])
    agent.set_maintenance(enable, request.query.get("reason", ""), service_id)
    return _ok()


def _require_check_write(request: web.Request, check: dict[str, Any]) -> None:
    agent = agent_of(request)
    service = agent.store.services.get(check["ServiceID"])
    if service:
        request["identity"].require("service", "write", service["Service"])
    else:
        request["identity"].require("node", "write", agent.config.node_name)


@routes.put("/v1/agent/check/register")
async def register_check(request: web.Request) -> web.Response:
    agent = agent_of(request)
    body = read_json(await request.read())
    check = safe_parse(parse_check_registration, body, agent.config.enable_script_checks)
    _require_check_write(request, check)
    agent.register_check(check)
    return _ok()


@routes.put("/v1/agent/check/deregister/{check_id}")
async def deregister_check(request: web.Request) -> web.Response:
    agent = agent_of(request)
    check = agent.check(request.match_info["check_id"])
    _require_check_write(request, check)
    agent.deregister_check(check["CheckID"])
    return _ok()


async def _ttl_update(request: web.Request, status: str, output: str) -> web.Response:
    agent = agent_of(request)
    check = agent.check(request.match_info["check_id"])
    _require_check_write(request, check)
    agent.update_ttl(check["CheckID"], status, output)
    return _ok()


@routes.put("/v1/agent/check/pass/{check_id}")
async def check_pass(request: web.Request) -> web.Response:
    return await _ttl_update(request, "passing", request.query.get("note", ""))


@routes.put("/v1/agent/check/warn/{check_id}")
async def check_warn(request: web.Request) -> web.Response:
    return await _ttl_update(request, "warning", request.query.get("note", ""))


@routes.put("/v1/agent/check/fail/{check_id}")
async def check_fail(request: web.Request) -> web.Response:
    return await _ttl_update(request, "critical", request.query.get("note", ""))


@routes.put("/v1/agent/check/update/{check_id}")
async def check_update(request: web.Request) -> web.Response:
    fields = normalize(read_json(await request.read()), {"status": "Status", "output": "Output"}, "checkUpdate")
    status, output = fields.get("Status", ""), fields.get("Output", "")
    if status not in STATUSES:
        raise ConsulError(400, f"Invalid check status: '{status}'")
    if not isinstance(output, str):
        raise ConsulError(400, "Request decode failed: json: cannot unmarshal into Go struct field checkUpdate.Output of type string")
    return await _ttl_update(request, status, truncate(output, CHECK_BUF_SIZE))


# ---- the agent's own lifecycle and telemetry -------------------------------------------------------


@routes.put("/v1/agent/reload")
async def reload(request: web.Request) -> web.Response:
    """Consul re-reads its configuration files; this agent's settings are its command line, which a
    running process cannot re-read, so there is nothing to load and the reload changes nothing."""
    agent = agent_of(request)
    request["identity"].require("agent", "write", agent.config.node_name)
    return _ok()


@routes.put("/v1/agent/leave")
async def leave(request: web.Request) -> web.Response:
    """A graceful leave: the answer goes out, then the agent shuts down as on SIGTERM (its state kept)."""
    agent = agent_of(request)
    request["identity"].require("agent", "write", agent.config.node_name)
    asyncio.get_running_loop().call_later(0.1, agent.leaving.set)
    return _ok()


@routes.get("/v1/agent/metrics")
async def metrics(request: web.Request) -> web.Response:
    agent = agent_of(request)
    request["identity"].require("agent", "read", agent.config.node_name)
    gauges = state_gauges(agent.store)
    if request.query.get("format") == "prometheus":
        return web.Response(body=agent.metrics.as_prometheus(gauges), headers={"Content-Type": CONTENT_TYPE_LATEST})
    return json_reply(agent.metrics.as_json(gauges))


@routes.get("/v1/agent/monitor")
async def monitor(request: web.Request) -> web.StreamResponse:
    """The agent's log lines as they are written, at ?loglevel= and above (?logjson: one JSON object
    a line), until the client goes or the agent stops."""
    agent = agent_of(request)
    request["identity"].require("agent", "read", agent.config.node_name)
    name = request.query.get("loglevel", "info").lower()
    if name not in LEVELS:
        raise ConsulError(400, f"Unknown log level: {name}")
    as_json = "logjson" in request.query
    queue: asyncio.Queue = asyncio.Queue(maxsize=MONITOR_BUFFER)
    stream = (queue, LEVELS[name])
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    agent.log_streams.streams.add(stream)
    try:
        while not agent.leaving.is_set():
            record = await queue.get()
            await response.write(log_line(record, as_json).encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        agent.log_streams.streams.discard(stream)
    return response
