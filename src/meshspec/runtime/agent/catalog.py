"""Nodes other than this agent's, as `/v1/catalog/register` writes them: external services (a
database the mesh does not run, a SaaS endpoint) with the checks whoever registered them reports,
the way Consul's External Service Monitor keeps them. Nothing here probes them: their checks hold
the status they were registered with.

One document per node in the store (`catalog_nodes`): the node's fields, its services by ID and
its checks by ID. The catalog and health reads show them beside this agent's own node; the agent
endpoints never do (they are the local agent's).
"""

from __future__ import annotations

from typing import Any

from meshspec.runtime.agent.definitions import STATUSES, parse_service
from meshspec.runtime.agent.errors import ConsulError, bad_request
from meshspec.runtime.agent.store import service_topic

NODE_FIELDS = ("Node", "ID", "Address", "Datacenter", "TaggedAddresses", "Meta")


def _fields(raw: Any) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in raw.items()} if isinstance(raw, dict) else {}


def parse_register(raw: Any, datacenter: str) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
    """A catalog/register body → (node fields, service or None, checks)."""
    if not isinstance(raw, dict):
        raise ConsulError(400, "Request decode failed: json: cannot unmarshal into Go value of type structs.RegisterRequest")
    fields = _fields(raw)
    name, address = str(fields.get("node") or ""), str(fields.get("address") or "")
    if not name:
        raise bad_request("Must provide node")
    if not address and fields.get("skipnodeupdate") is not True:
        raise bad_request("Must provide address if SkipNodeUpdate is not set")
    node = node_record(name, fields, datacenter, meta_field="nodemeta")
    service = parse_node_service(fields["service"]) if fields.get("service") else None
    raw_checks = ([fields["check"]] if fields.get("check") else []) + list(fields.get("checks") or [])
    return node, service, [parse_check(c, name, service) for c in raw_checks]


def node_record(name: str, fields: dict[str, Any], datacenter: str, meta_field: str = "meta") -> dict[str, Any]:
    """A node's fields from a lowercased body (a registration calls its meta NodeMeta, a Node `Meta`)."""
    return {"Node": name, "ID": str(fields.get("id") or ""), "Address": str(fields.get("address") or ""),
            "Datacenter": datacenter, "TaggedAddresses": dict(fields.get("taggedaddresses") or {}),
            "Meta": dict(fields.get(meta_field) or {})}


def parse_node_service(raw: Any) -> dict[str, Any]:
    """A NodeService body (the catalog names it `Service`, not `Name`), validated as the agent's."""
    body = dict(raw) if isinstance(raw, dict) else {}
    if "Name" not in body and "Service" in body:
        body["Name"] = body.pop("Service")
    service, _ = parse_service({k: v for k, v in body.items() if k.lower() not in ("check", "checks", "modifyindex",
                                                                                    "createindex")},
                               script_checks=False)
    return service


def topics_of(doc: dict[str, Any] | None) -> set[str]:
    """What a write to an external node wakes: its services' watchers and every list of nodes and checks."""
    names = {s["Service"] for s in doc["Services"].values()} if doc else set()
    return {"services", "checks", "nodechecks", *(service_topic(n) for n in names)}


def parse_check(raw: Any, node: str, service: dict[str, Any] | None) -> dict[str, Any]:
    fields = _fields(raw)
    check_id = str(fields.get("checkid") or fields.get("name") or "")
    if not check_id:
        raise bad_request("Missing check ID")
    status = str(fields.get("status") or "critical")
    if status not in STATUSES:
        raise bad_request("Status for checks must 'passing', 'warning', 'critical'")
    service_id = str(fields.get("serviceid") or "")
    if service_id and service is not None and service_id != service["ID"]:
        raise bad_request(f"Invalid check ServiceID {service_id!r}: not the service of this registration")
    return {"Node": node, "CheckID": check_id, "Name": str(fields.get("name") or check_id),
            "Status": status, "Notes": str(fields.get("notes") or ""), "Output": str(fields.get("output") or ""),
            "ServiceID": service_id, "Type": "", "Definition": dict(fields.get("definition") or {})}


def merged(old: dict[str, Any] | None, node: dict[str, Any], service: dict[str, Any] | None,
           checks: list[dict[str, Any]], index: int) -> dict[str, Any]:
    """The node's document after a registration at `index`: node fields replaced, the service and
    checks given added or replaced, the rest kept."""
    services = dict(old["Services"]) if old else {}
    stored_checks = dict(old["Checks"]) if old else {}
    if service is not None:
        previous = services.get(service["ID"])
        services[service["ID"]] = {**service, "CreateIndex": previous["CreateIndex"] if previous else index,
                                   "ModifyIndex": index}
    for check in checks:
        previous = stored_checks.get(check["CheckID"])
        stored_checks[check["CheckID"]] = {**check, "CreateIndex": previous["CreateIndex"] if previous else index,
                                           "ModifyIndex": index}
    return {**node, "Services": services, "Checks": stored_checks}


def node_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {"ID": doc["ID"], "Node": doc["Node"], "Address": doc["Address"], "Datacenter": doc["Datacenter"],
            "TaggedAddresses": doc["TaggedAddresses"], "Meta": doc["Meta"],
            "CreateIndex": doc["CreateIndex"], "ModifyIndex": doc["ModifyIndex"]}


def check_view(doc: dict[str, Any], check: dict[str, Any]) -> dict[str, Any]:
    service = doc["Services"].get(check["ServiceID"])
    return {**{k: v for k, v in check.items() if k != "Definition"},
            "ServiceName": service["Service"] if service else "", "ServiceTags": service["Tags"] if service else [],
            "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": check["Definition"]}


def checks_of(doc: dict[str, Any], service_id: str | None = None) -> list[dict[str, Any]]:
    """The node's checks (service_id None), or its node-level checks and those of one service."""
    return [check_view(doc, c) for _, c in sorted(doc["Checks"].items())
            if service_id is None or c["ServiceID"] in ("", service_id)]


def instances(docs: dict[str, dict[str, Any]], name: str, tags: set[str]) -> list[tuple[dict, dict]]:
    """(node document, service) of every external instance of service `name` carrying `tags`."""
    return [(doc, svc) for _, doc in sorted(docs.items()) for _, svc in sorted(doc["Services"].items())
            if svc["Service"] == name and tags <= {t.lower() for t in svc["Tags"]}]
