"""/v1/operator/* and /v1/coordinate/*: the one-server cluster as Consul's operator API shows it.

This agent is the only server: the Raft configuration lists it as the leader and only voter,
autopilot reports it healthy with a failure tolerance of 0, and its coordinate is the one a node
starts with (there is no other node to measure round trips against, so it never changes). What
only a cluster has or changes (removing a peer, gossip keys, autopilot settings, coordinate
updates) is not offered (README).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from meshspec.runtime.agent import VERSION, render
from meshspec.runtime.agent.blocking import on_topics
from meshspec.runtime.agent.core import Agent
from meshspec.runtime.agent.http import agent_of, blocking_reply, json_reply

routes = web.RouteTableDef()
#: Consul's autopilot defaults; with one server there is nothing for autopilot to do, so nothing
#: here may be changed (a PUT is not offered).
AUTOPILOT = {"CleanupDeadServers": True, "LastContactThreshold": "200ms", "MaxTrailingLogs": 250, "MinQuorum": 0,
             "ServerStabilizationTime": "10s", "RedundancyZoneTag": "", "DisableUpgradeMigration": False,
             "UpgradeVersionTag": "", "CreateIndex": 1, "ModifyIndex": 1}
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


@routes.get("/v1/operator/autopilot/configuration")
async def autopilot_configuration(request: web.Request) -> web.Response:
    request["identity"].require("operator", "read")
    return json_reply(AUTOPILOT)


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


def _node_coordinate(agent: Agent) -> dict[str, Any]:
    return {"Node": agent.config.node_name, "Segment": "", "Coord": render.coordinate(),
            "CreateIndex": 1, "ModifyIndex": 1}


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
        if not request["identity"].can("node", "read", agent.config.node_name):
            return agent.store.topic_index("coordinates"), [], True
        return agent.store.topic_index("coordinates"), [_node_coordinate(agent)], False

    return await blocking_reply(request, on_topics("coordinates"), compute)


@routes.get("/v1/coordinate/node/{node}")
async def coordinate_node(request: web.Request) -> web.Response:
    agent = agent_of(request)
    node = request.match_info["node"]

    def compute():
        found = [_node_coordinate(agent)] if node == agent.config.node_name else []
        if found and not request["identity"].can("node", "read", node):
            return agent.store.topic_index("coordinates"), [], True
        return agent.store.topic_index("coordinates"), found, False

    return await blocking_reply(request, on_topics("coordinates"), compute, not_found_if_empty=True)
