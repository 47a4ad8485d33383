"""Consul's JSON shapes for nodes, services, checks and KV entries."""

from __future__ import annotations

import base64
from typing import Any

from meshspec.common.durations import format_duration
from meshspec.runtime.agent.core import Agent
from meshspec.runtime.agent.sessions import SERF_CHECK_ID


def node(agent: Agent) -> dict[str, Any]:
    address = agent.config.advertise
    return {
        "ID": agent.store.node_id,
        "Node": agent.config.node_name,
        "Address": address,
        "Datacenter": agent.config.datacenter,
        "TaggedAddresses": {"lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address},
        "Meta": {"consul-network-segment": ""},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    }


def _optional(service: dict[str, Any]) -> dict[str, Any]:
    """Fields Consul omits when empty."""
    out: dict[str, Any] = {}
    if service["Kind"]:
        out["Kind"] = service["Kind"]
    if service["TaggedAddresses"]:
        out["TaggedAddresses"] = service["TaggedAddresses"]
    if service["SocketPath"]:
        out["SocketPath"] = service["SocketPath"]
    if service.get("Locality"):
        out["Locality"] = service["Locality"]
    return out


def agent_service(agent: Agent, service: dict[str, Any]) -> dict[str, Any]:
    """Shape of /v1/agent/services values and /v1/agent/service/:id."""
    return {
        "ID": service["ID"],
        "Service": service["Service"],
        "Tags": service["Tags"],
        "Meta": service["Meta"],
        "Port": service["Port"],
        "Address": service["Address"],
        **_optional(service),
        "Weights": service["Weights"],
        "EnableTagOverride": service["EnableTagOverride"],
        "Datacenter": agent.config.datacenter,
    }


def node_service(service: dict[str, Any]) -> dict[str, Any]:
    """Shape of `Service` in health results and catalog/node."""
    return {
        "ID": service["ID"],
        "Service": service["Service"],
        "Tags": service["Tags"],
        "Address": service["Address"],
        **_optional(service),
        "Meta": service["Meta"],
        "Port": service["Port"],
        "Weights": service["Weights"],
        "EnableTagOverride": service["EnableTagOverride"],
        "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}, **service["Proxy"]},
        "Connect": service["Connect"],
        "PeerName": "",
        "CreateIndex": service["CreateIndex"],
        "ModifyIndex": service["ModifyIndex"],
    }


def catalog_service(n: dict[str, Any], service: dict[str, Any]) -> dict[str, Any]:
    """Shape of /v1/catalog/service/:name entries: node `n`'s fields flattened with Service* fields."""
    return {
        "ID": n["ID"],
        "Node": n["Node"],
        "Address": n["Address"],
        "Datacenter": n["Datacenter"],
        "TaggedAddresses": n["TaggedAddresses"],
        "NodeMeta": n["Meta"],
        "ServiceKind": service["Kind"],
        "ServiceID": service["ID"],
        "ServiceName": service["Service"],
        "ServiceTags": service["Tags"],
        "ServiceAddress": service["Address"],
        "ServiceTaggedAddresses": service["TaggedAddresses"] or None,
        "ServiceWeights": service["Weights"],
        "ServiceMeta": service["Meta"],
        "ServicePort": service["Port"],
        "ServiceSocketPath": service["SocketPath"],
        "ServiceEnableTagOverride": service["EnableTagOverride"],
        "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}, **service["Proxy"]},
        "ServiceConnect": service["Connect"],
        "ServiceLocality": service.get("Locality"),
        "CreateIndex": service["CreateIndex"],
        "ModifyIndex": service["ModifyIndex"],
    }


def _definition(check: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in ("HTTP", "TCP", "Method", "Body", "DockerContainerID", "Shell"):
        if check.get(field):
            out[field] = check[field]
    if check.get("Header"):
        out["Header"] = check["Header"]
    if check.get("TLSSkipVerify"):
        out["TLSSkipVerify"] = True
    if check.get("ScriptArgs"):
        out["ScriptArgs"] = check["ScriptArgs"]
    for field in ("Interval", "Timeout", "DeregisterCriticalServiceAfter"):
        if check.get(field):
            out[field] = format_duration(check[field])
    return out


def health_check(agent: Agent, check: dict[str, Any]) -> dict[str, Any]:
    service = agent.store.services.get(check["ServiceID"])
    return {
        "Node": agent.config.node_name,
        "CheckID": check["CheckID"],
        "Name": check["Name"],
        "Status": check["Status"],
        "Notes": check["Notes"],
        "Output": check["Output"],
        "ServiceID": check["ServiceID"],
        "ServiceName": service["Service"] if service else "",
        "ServiceTags": service["Tags"] if service else [],
        "Type": check["Type"],
        "Interval": format_duration(check["Interval"]) if check["Interval"] else "",
        "Timeout": format_duration(check["Timeout"]) if check["Timeout"] else "",
        "ExposedPort": 0,
        "Definition": _definition(check),
        "CreateIndex": check["CreateIndex"],
        "ModifyIndex": check["ModifyIndex"],
    }


def serf_check(agent: Agent) -> dict[str, Any]:
    """The node-level check every real Consul node carries."""
    return {
        "Node": agent.config.node_name,
        "CheckID": SERF_CHECK_ID,
        "Name": "Serf Health Status",
        "Status": "passing",
        "Notes": "",
        "Output": "Agent alive and reachable",
        "ServiceID": "",
        "ServiceName": "",
        "ServiceTags": [],
        "Type": "",
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    }


def all_checks(agent: Agent) -> list[dict[str, Any]]:
    """Every check on the node as the health endpoints show them, serfHealth first."""
    return [serf_check(agent)] + [health_check(agent, c) for c in sorted_checks(agent)]


def sorted_checks(agent: Agent) -> list[dict[str, Any]]:
    return [agent.store.checks[k] for k in sorted(agent.store.checks)]


def node_checks(agent: Agent) -> list[dict[str, Any]]:
    return [serf_check(agent)] + [health_check(agent, c) for c in sorted_checks(agent) if not c["ServiceID"]]


def service_entry(agent: Agent, service: dict[str, Any]) -> dict[str, Any]:
    """One /v1/health/service/:name entry: Node, Service, and node + service checks."""
    own = [health_check(agent, c) for c in sorted_checks(agent) if c["ServiceID"] == service["ID"]]
    return {"Node": node(agent), "Service": node_service(service), "Checks": node_checks(agent) + own}


def kv_entry(entry: dict[str, Any]) -> dict[str, Any]:
    value = entry["Value"]
    rendered = {
        "LockIndex": entry["LockIndex"],
        "Key": entry["Key"],
        "Flags": entry["Flags"],
        "Value": base64.b64encode(value).decode() if value else None,
        "CreateIndex": entry["CreateIndex"],
        "ModifyIndex": entry["ModifyIndex"],
    }
    if entry["Session"]:  # Consul's omitempty: only a held lock names its session
        rendered["Session"] = entry["Session"]
    return rendered


def coordinate() -> dict[str, Any]:
    """A node's network coordinate as Consul starts it (serf's NewCoordinate): one node has nothing
    to measure against, so it never moves."""
    return {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05}


def leader_addr(agent: Agent) -> str:
    """The one server's RPC address, as Consul names its leader (this node leads itself)."""
    return f"{agent.config.advertise}:8300"


def member(agent: Agent, wan: bool = False) -> dict[str, Any]:
    """This node as Serf lists it: in the LAN pool by its name on 8301; in the WAN pool (servers
    of every datacenter) as `<node>.<datacenter>` on 8302."""
    from meshspec.runtime.agent import VERSION

    return {
        "Name": f"{agent.config.node_name}.{agent.config.datacenter}" if wan else agent.config.node_name,
        "Addr": agent.config.advertise,
        "Port": 8302 if wan else 8301,
        "Tags": {
            "build": f"{VERSION}:meshspec", "dc": agent.config.datacenter, "id": agent.store.node_id,
            "port": "8300", "role": "consul", "vsn": "2", "vsn_max": "3", "vsn_min": "2", "bootstrap": "1",
        },
        "Status": 1,
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
    }
