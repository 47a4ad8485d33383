"""/v1/operator/* and /v1/coordinate/*: the one-server cluster as Consul's operator API shows it.

This agent is the only server: the Raft configuration lists it as the leader and only voter, and
removing a peer fails as Raft refuses it (the only voter cannot go; any other was never a peer).
Autopilot reports it healthy with a failure tolerance of 0; its settings are stored and read back
with cas, as Consul keeps them, though one server gives autopilot nothing to do. There is no gossip,
so no keyring: keyring operations fail as Consul's do with encryption off. The agent's own
coordinate is the one a node starts with (there is no other node to measure round trips against);
coordinates sent with /v1/coordinate/update are kept for the nodes the catalog knows.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web

from meshspec.common.durations import go_duration, parse_duration
from meshspec.runtime.agent import VERSION, render
from meshspec.runtime.agent.blocking import on_topics
from meshspec.runtime.agent.core import Agent
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.http import agent_of, blocking_reply, json_reply, lower_keys, read_object

routes = web.RouteTableDef()
#: Consul's autopilot defaults, until a PUT stores others.
AUTOPILOT = {"CleanupDeadServers": True, "LastContactThreshold": "200ms", "MaxTrailingLogs": 250, "MinQuorum": 0,
             "ServerStabilizationTime": "10s", "RedundancyZoneTag": "", "DisableUpgradeMigration": False,
             "UpgradeVersionTag": "", "CreateIndex": 1, "ModifyIndex": 1}
AUTOPILOT_DURATIONS = ("LastContactThreshold", "ServerStabilizationTime")
COORDINATE_TOPICS = ("coordinates", "nodes")  # a node deregistered takes its coordinate with it
PROXY_KINDS = ("api-gateway", "connect-native", "connect-proxy", "ingress-gateway", "mesh-gateway",
               "terminating-gateway")


def _server(agent: Agent) -> dict[str, Any]:
    return {"ID": agent.store.node_id, "Node": agent.config.node_name, "Address": render.leader_addr(agent),
            "Leader": True, "ProtocolVersion": "3", "Voter": True, "LastIndex": agent.store.index}


@routes.get("/v1/operator/raft/configuration")
async def raft_configuration(request: web.Request) -> web.Response:
    agent = agent_of(request)
    request["identity"].require("operator", "read")
    return json_reply({"Servers": [_server(agent)], "Index": agent.store.index})


@routes.get("/v1/operator/autopilot/health")
async def autopilot_health(request: web.Request) -> web.Response:
    agent = agent_of(request)
    request["identity"].require("operator", "read")
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(agent.started))
    server = {"ID": agent.store.node_id, "Name": agent.config.node_name, "Address": render.leader_addr(agent),
              "SerfStatus": "alive", "Version": VERSION, "Leader": True, "LastContact": "0s", "LastTerm": 1,
              "LastIndex": agent.store.index, "Healthy": True, "Voter": True, "StableSince": since}
    return json_reply({"Healthy": True, "FailureTolerance": 0, "Servers": [server]})


@routes.delete("/v1/operator/raft/peer")
async def raft_remove_peer(request: web.Request) -> web.Response:
    agent = agent_of(request)
    has_id, has_address = "id" in request.query, "address" in request.query
    if has_id == has_address:
        raise ConsulError(400, "Must specify only one of ?id or ?address" if has_id else
                          "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove")
    request["identity"].require("operator", "write")
    server = _server(agent)
    field, value = ("id", request.query["id"]) if has_id else ("address", request.query["address"])
    if value != server["ID" if has_id else "Address"]:
        raise ConsulError(500, f'{field} "{value}" was not found in the Raft configuration')
    # Raft keeps at least one voter: removing the only server is refused, as Raft refuses it.
    raise ConsulError(500, "need at least one voter in configuration: {[]}")


@routes.post("/v1/operator/raft/transfer-leader")
async def raft_transfer_leader(request: web.Request) -> web.Response:
    """Raft finds no other voter to hand leadership to (Consul's single-node test wants this text)."""
    request["identity"].require("operator", "write")
    raise ConsulError(500, "cannot find peer")


@routes.get("/v1/operator/autopilot/configuration")
async def autopilot_configuration(request: web.Request) -> web.Response:
    request["identity"].require("operator", "read")
    stored = agent_of(request).store.operator.get("autopilot")
    return json_reply({k: stored[k] for k in AUTOPILOT} if stored else AUTOPILOT)


@routes.put("/v1/operator/autopilot/configuration")
async def set_autopilot_configuration(request: web.Request) -> web.Response:
    agent = agent_of(request)
    fields = lower_keys(read_object(await request.read(), "Error parsing autopilot config: json: cannot unmarshal"
                                                          " into Go value of type api.AutopilotConfiguration"))
    config = {}
    for key, default in AUTOPILOT.items():
        value = fields.get(key.lower())
        if key in ("CreateIndex", "ModifyIndex"):
            continue
        if key in AUTOPILOT_DURATIONS:
            try:
                config[key] = go_duration(parse_duration(value))
            except ValueError as err:
                raise ConsulError(400, f"Error parsing autopilot config: {err}") from None
        elif value is None:
            config[key] = type(default)()  # Go's zero value: a PUT replaces the whole configuration
        elif not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
            raise ConsulError(400, f"Error parsing autopilot config: json: cannot unmarshal {type(value).__name__} "
                                   f"into Go struct field AutopilotConfiguration.{key}")
        else:
            config[key] = value
    raw_cas = request.query.get("cas")
    request["identity"].require("operator", "write")
    current = agent.store.operator.get("autopilot")
    if raw_cas is not None:
        if not raw_cas.isdigit():
            raise ConsulError(400, f'Error parsing cas value: strconv.ParseUint: parsing "{raw_cas}": invalid syntax')
        if int(raw_cas) != (current["ModifyIndex"] if current else 0):
            return json_reply(False)
    agent.store.doc_put("operator", {"Name": "autopilot", **config})
    return json_reply(True)


# ---- the keyring: gossip encryption, which a single agent without gossip does not have ---------


def _keyring_failure(agent: Agent, message: str) -> ConsulError:
    """Consul's multierror of a keyring operation with encryption off: the WAN pool's and the LAN
    pool's failure, each with the one server's message."""
    node = agent.config.node_name
    errors = ["WAN error: 1/1 nodes reported failure", f"{node}.{agent.config.datacenter}: {message}",
              f"{agent.config.datacenter} (LAN) error: 1/1 nodes reported failure", f"{node}: {message}"]
    return ConsulError(500, f"{len(errors)} errors occurred:\n" + "".join(f"\t* {e}\n" for e in errors) + "\n")


@routes.get("/v1/operator/keyring")
async def keyring_list(request: web.Request) -> web.Response:
    request["identity"].require("keyring", "read")
    raise _keyring_failure(agent_of(request), "Keyring is empty (encryption not enabled)")


@routes.post("/v1/operator/keyring")
@routes.put("/v1/operator/keyring")
@routes.delete("/v1/operator/keyring")
async def keyring_change(request: web.Request) -> web.Response:
    read_object(await request.read(), "Request decode failed: json: cannot unmarshal into Go value of type agent.keyringArgs")
    request["identity"].require("keyring", "write")
    raise _keyring_failure(agent_of(request), "No keyring to modify (encryption not enabled)")


@routes.get("/v1/operator/usage")
async def usage(request: web.Request) -> web.Response:
    agent = agent_of(request)
    request["identity"].require("operator", "read")
    services = list(agent.store.services.values())
    proxies = {kind: sum(1 for s in services if s.get("Kind") == kind) for kind in PROXY_KINDS}
    plain = sum(1 for s in services if not s.get("Kind"))
    return json_reply({"Usage": {agent.config.datacenter: {
        "Services": len({s["Service"] for s in services}), "ServiceInstances": len(services),
        "ConnectServiceInstances": proxies, "BillableServiceInstances": plain, "Nodes": 1,
    }}}, agent.store.index)


# ---- coordinates ---------------------------------------------------------------------------------


def _node_coordinates(agent: Agent) -> list[dict[str, Any]]:
    """Every node's coordinate: the agent's own (as it starts, unless one was sent for it), then those
    sent for the catalog's other nodes; a node deregistered since has none."""
    own = agent.config.node_name
    found = [agent.store.coordinates.get(own) or {"Node": own, "Segment": "", "Coord": render.coordinate(),
                                                  "CreateIndex": 1, "ModifyIndex": 1}]
    found += [c for node, c in sorted(agent.store.coordinates.items()) if node != own and node in agent.store.catalog_nodes]
    return [{k: c[k] for k in ("Node", "Segment", "Coord", "CreateIndex", "ModifyIndex")} for c in found]


def _valid_coordinate(raw: Any) -> dict[str, Any]:
    """serf's Coordinate.IsValid and IsCompatibleWith this agent's: 8 finite dimensions, finite scalars."""
    fields = {str(k).lower(): v for k, v in raw.items()} if isinstance(raw, dict) else {}
    vec = fields.get("vec")
    numbers = [*(vec if isinstance(vec, list) else []), *(fields.get(k, 0) for k in ("error", "adjustment", "height"))]
    finite = all(isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) for n in numbers)
    if not isinstance(vec, list) or not finite:
        raise ConsulError(500, "invalid coordinate")
    if len(vec) != len(render.coordinate()["Vec"]):
        raise ConsulError(500, "incompatible coordinate")
    return {"Vec": [float(v) for v in vec], "Error": float(fields.get("error", 0)),
            "Adjustment": float(fields.get("adjustment", 0)), "Height": float(fields.get("height", 0))}


@routes.put("/v1/coordinate/update")
async def coordinate_update(request: web.Request) -> web.Response:
    """A node's coordinate, as its agent sends it. Consul applies updates in batches and skips nodes
    the catalog does not know; here the update is applied at once, with the same skip."""
    agent = agent_of(request)
    fields = lower_keys(read_object(await request.read(),
                                    "Request decode failed: json: cannot unmarshal into Go value of type structs.Coordinate"))
    node = str(fields.get("node") or "")
    coord = _valid_coordinate(fields.get("coord"))
    request["identity"].require("node", "write", node)
    if node == agent.config.node_name or node in agent.store.catalog_nodes:
        agent.store.doc_put("coordinates", {"Node": node, "Segment": str(fields.get("segment") or ""), "Coord": coord})
    return web.Response(status=200)


@routes.get("/v1/coordinate/datacenters")
async def coordinate_datacenters(request: web.Request) -> web.Response:
    agent = agent_of(request)
    wan = f"{agent.config.node_name}.{agent.config.datacenter}"
    return json_reply([{"Datacenter": agent.config.datacenter, "AreaID": "wan",
                        "Coordinates": [{"Node": wan, "Coord": render.coordinate()}]}])


@routes.get("/v1/coordinate/nodes")
async def coordinate_nodes(request: web.Request) -> web.Response:
    agent = agent_of(request)

    def compute():
        readable = [c for c in _node_coordinates(agent) if request["identity"].can("node", "read", c["Node"])]
        return agent.store.topic_index(*COORDINATE_TOPICS), readable, len(readable) < len(_node_coordinates(agent))

    return await blocking_reply(request, on_topics(*COORDINATE_TOPICS), compute)


@routes.get("/v1/coordinate/node/{node}")
async def coordinate_node(request: web.Request) -> web.Response:
    agent = agent_of(request)
    node = request.match_info["node"]

    def compute():
        found = [c for c in _node_coordinates(agent) if c["Node"] == node]
        if found and not request["identity"].can("node", "read", node):
            return agent.store.topic_index(*COORDINATE_TOPICS), [], True
        return agent.store.topic_index(*COORDINATE_TOPICS), found, False

    return await blocking_reply(request, on_topics(*COORDINATE_TOPICS), compute, not_found_if_empty=True)
