"""/v1/catalog/*, /v1/health/* and /v1/status/*: the node's view as a one-node cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from meshspec.runtime.agent import catalog, render
from meshspec.runtime.agent.blocking import on_topics
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.filter import compile_filter
from meshspec.runtime.agent.http import agent_of, blocking_reply, json_reply, read_json
from meshspec.runtime.agent.store import service_topic

routes = web.RouteTableDef()
HEALTH_STATES = ("any", "passing", "warning", "critical")


def _tags(request: web.Request) -> set[str]:
    return {t.lower() for t in request.query.getall("tag", [])}


def _external(request: web.Request, name: str) -> list[tuple[dict, dict]]:
    """(node document, service) of the instances of `name` on nodes registered through the catalog."""
    return catalog.instances(agent_of(request).store.catalog_nodes, name, _tags(request))


def _instances(request: web.Request, name: str) -> list[dict[str, Any]]:
    """Instances of service `name` carrying every `tag=` given (case-insensitive, like Consul)."""
    wanted = _tags(request)
    services = agent_of(request).store.services
    return [
        s for _, s in sorted(services.items())
        if s["Service"] == name and wanted <= {t.lower() for t in s["Tags"]}
    ]


def _peered(request: web.Request) -> bool:
    """?peer=NAME asks for what a cluster peer exported: this node has no peerings, so nothing."""
    return bool(request.query.get("peer"))


Visible = Callable[[Any], bool]


def _readable(request: web.Request, items: list[Any], visible: Visible) -> tuple[list[Any], bool]:
    """Drop everything the token may not read (Consul filters lists, no 403), then apply ?filter=:
    ACLs first, as Consul does, so a user's filter never runs over what the token may not read."""
    predicate = compile_filter(request.query.get("filter"))  # a bad filter is a 400 for any token
    if _peered(request):
        return [], False
    readable = [i for i in items if visible(i)]
    filtered = len(readable) < len(items)
    return ([i for i in readable if predicate(i)] if predicate else readable), filtered


def check_visible(request: web.Request) -> Visible:
    """A check is read with service:read on its service, a node's check with node:read on the node."""
    identity = request["identity"]
    return lambda c: (identity.can("service", "read", c["ServiceName"]) if c["ServiceName"]
                      else identity.can("node", "read", c["Node"]))


def _service_compute(request: web.Request, build: Callable[[], list[Any]]):
    name = request.match_info["name"]
    agent = agent_of(request)
    topics = (service_topic(name), "nodechecks")

    def compute():
        items, filtered = _readable(request, build(), lambda _: request["identity"].can("service", "read", name))
        return agent.store.topic_index(*topics), items, filtered

    return on_topics(*topics), compute


@routes.get("/v1/catalog/datacenters")
async def datacenters(request: web.Request) -> web.Response:
    return json_reply([agent_of(request).config.datacenter])


@routes.get("/v1/catalog/services")
async def catalog_services(request: web.Request) -> web.Response:
    agent = agent_of(request)

    def compute():
        tags: dict[str, list[str]] = {}
        external = [svc for doc in agent.store.catalog_nodes.values() for svc in doc["Services"].values()]
        for service in [*agent.store.services.values(), *external] if not _peered(request) else ():
            known = tags.setdefault(service["Service"], [])
            known.extend(t for t in service["Tags"] if t not in known)
        readable = {n: t for n, t in sorted(tags.items()) if request["identity"].can("service", "read", n)}
        return agent.store.topic_index("services"), readable, len(readable) < len(tags)

    return await blocking_reply(request, on_topics("services"), compute)


@routes.get("/v1/catalog/service/{name}")
async def catalog_service(request: web.Request) -> web.Response:
    agent = agent_of(request)
    interest, compute = _service_compute(
        request, lambda: [render.catalog_service(render.node(agent), s) for s in _instances(request, request.match_info["name"])]
        + [render.catalog_service(catalog.node_view(d), s) for d, s in _external(request, request.match_info["name"])]
    )
    return await blocking_reply(request, interest, compute)


@routes.get("/v1/catalog/nodes")
async def catalog_nodes(request: web.Request) -> web.Response:
    agent = agent_of(request)

    def compute():
        nodes = [render.node(agent), *(catalog.node_view(d) for _, d in sorted(agent.store.catalog_nodes.items()))]
        items, filtered = _readable(request, nodes,
                                    lambda n: request["identity"].can("node", "read", n["Node"]))
        return agent.store.topic_index("nodes"), items, filtered

    return await blocking_reply(request, on_topics("nodes"), compute)


def _node_and_services(request: web.Request, shape: Callable[[list[dict[str, Any]]], Any]):
    """A blocking read of one node and the services on it the token may read, `shape`d (a map by ID,
    or a list); null for a node that does not exist or may not be read."""
    agent, node_name = agent_of(request), request.match_info["node"]

    def compute():
        index = agent.store.topic_index("nodes", "services")
        external = agent.store.catalog_nodes.get(node_name)
        if (node_name != agent.config.node_name and external is None) or _peered(request):
            return index, None, False
        if not request["identity"].can("node", "read", node_name):
            return index, None, True
        node, services = ((catalog.node_view(external), external["Services"]) if external is not None
                          else (render.node(agent), agent.store.services))
        readable = [s for _, s in sorted(services.items()) if request["identity"].can("service", "read", s["Service"])]
        return index, {"Node": node, "Services": shape([render.node_service(s) for s in readable])}, len(readable) < len(services)

    return blocking_reply(request, on_topics("nodes", "services"), compute)


@routes.get("/v1/catalog/node/{node}")
async def catalog_node(request: web.Request) -> web.Response:
    return await _node_and_services(request, lambda services: {s["ID"]: s for s in services})


@routes.get("/v1/catalog/node-services/{node}")
async def catalog_node_services(request: web.Request) -> web.Response:
    return await _node_and_services(request, list)


@routes.get("/v1/health/service/{name}")
async def health_service(request: web.Request) -> web.Response:
    name = request.match_info["name"]

    def build():
        return _health_entries(request, [(None, s) for s in _instances(request, name)] + _external(request, name))

    interest, compute = _service_compute(request, build)
    return await blocking_reply(request, interest, compute)


# ---- Connect: the proxies and native instances that serve a service, and its gateways --------------

# A proxy's health lives on its own service's topic, whatever its name: watch every service and check.
CONNECT_TOPICS = ("services", "checks", "nodechecks", "config")


def serves_over_connect(service: dict[str, Any], name: str) -> bool:
    """A Connect proxy for `name`, or an instance of `name` that speaks Connect natively."""
    if service["Kind"] == "connect-proxy":
        return (service["Proxy"] or {}).get("DestinationServiceName") == name
    return service["Service"] == name and bool((service["Connect"] or {}).get("Native"))


def _all_instances(request: web.Request, keep: Callable[[dict[str, Any]], bool]) -> list[tuple[dict | None, dict]]:
    """(external node document or None for this agent's node, service) of every instance `keep` wants."""
    agent, wanted = agent_of(request), _tags(request)
    tagged = [(None, s) for _, s in sorted(agent.store.services.items())]
    tagged += [(d, s) for _, d in sorted(agent.store.catalog_nodes.items()) for _, s in sorted(d["Services"].items())]
    return [(d, s) for d, s in tagged if keep(s) and wanted <= {t.lower() for t in s["Tags"]}]


def _health_entries(request: web.Request, found: list[tuple[dict | None, dict]]) -> list[dict[str, Any]]:
    agent = agent_of(request)
    entries = [render.service_entry(agent, s) if d is None else
               {"Node": catalog.node_view(d), "Service": render.node_service(s), "Checks": catalog.checks_of(d, s["ID"])}
               for d, s in found]
    if "passing" in request.query and request.query["passing"].lower() not in ("0", "false"):
        entries = [e for e in entries if all(c["Status"] == "passing" for c in e["Checks"])]
    return entries


async def _connect_reply(request: web.Request, build: Callable[[], list[Any]], read_name: str) -> web.Response:
    agent = agent_of(request)

    def compute():
        items, filtered = _readable(request, build(), lambda _: request["identity"].can("service", "read", read_name))
        return agent.store.topic_index(*CONNECT_TOPICS), items, filtered

    return await blocking_reply(request, on_topics(*CONNECT_TOPICS), compute)


@routes.get("/v1/catalog/connect/{name}")
async def catalog_connect(request: web.Request) -> web.Response:
    agent, name = agent_of(request), request.match_info["name"]
    return await _connect_reply(request, lambda: [
        render.catalog_service(render.node(agent) if d is None else catalog.node_view(d), s)
        for d, s in _all_instances(request, lambda s: serves_over_connect(s, name))], name)


@routes.get("/v1/health/connect/{name}")
async def health_connect(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return await _connect_reply(request, lambda: _health_entries(
        request, _all_instances(request, lambda s: serves_over_connect(s, name))), name)


def gateway_services(agent, gateway: str) -> list[dict[str, Any]]:
    """What an ingress or terminating gateway's config entry routes, as Consul's GatewayService list."""
    found = []
    for kind in ("ingress-gateway", "terminating-gateway"):
        stored = agent.store.config_entries.get(f"{kind}/{gateway}")
        entry = {str(k).lower(): v for k, v in (stored or {}).get("Entry", {}).items()}
        listeners = ((entry.get("listeners") or []) if kind == "ingress-gateway"
                     else [{"services": entry.get("services") or []}])
        for listener in listeners:
            at = {str(k).lower(): v for k, v in listener.items()}
            for raw in at.get("services") or []:
                svc = {str(k).lower(): v for k, v in raw.items()}
                ingress = kind == "ingress-gateway"
                found.append({
                    "Gateway": {"Name": gateway}, "Service": {"Name": str(svc.get("name") or "")}, "GatewayKind": kind,
                    "Port": int(at.get("port") or 0) if ingress else 0,
                    "Protocol": str(at.get("protocol") or "tcp") if ingress else "",
                    "Hosts": list(svc.get("hosts") or []) if ingress else None,
                    **{k: "" if ingress else str(svc.get(k.lower()) or "") for k in ("CAFile", "CertFile", "KeyFile", "SNI")},
                    "FromWildcard": ingress and svc.get("name") == "*",
                    "CreateIndex": stored["CreateIndex"], "ModifyIndex": stored["ModifyIndex"]})
    return found


@routes.get("/v1/catalog/gateway-services/{name}")
async def catalog_gateway_services(request: web.Request) -> web.Response:
    agent, gateway = agent_of(request), request.match_info["name"]
    return await _connect_reply(request, lambda: gateway_services(agent, gateway), gateway)


@routes.get("/v1/health/ingress/{name}")
async def health_ingress(request: web.Request) -> web.Response:
    """The instances of every ingress gateway whose entry routes `name` (or every service, `*`)."""
    agent, name = agent_of(request), request.match_info["name"]

    def build() -> list[dict[str, Any]]:
        gateways = {key.split("/", 1)[1] for key in agent.store.config_entries if key.startswith("ingress-gateway/")}
        routing = {g for g in gateways if any(s["Service"]["Name"] in (name, "*") for s in gateway_services(agent, g))}
        return _health_entries(request, _all_instances(
            request, lambda s: s["Kind"] == "ingress-gateway" and s["Service"] in routing))

    return await _connect_reply(request, build, name)


@routes.get("/v1/health/checks/{name}")
async def health_checks(request: web.Request) -> web.Response:
    agent = agent_of(request)

    def build():
        ids = {s["ID"] for s in _instances(request, request.match_info["name"])}
        local = [render.health_check(agent, c) for c in render.sorted_checks(agent) if c["ServiceID"] in ids]
        return local + [c for d, svc in _external(request, request.match_info["name"])
                        for c in catalog.checks_of(d) if c["ServiceID"] == svc["ID"]]

    interest, compute = _service_compute(request, build)
    return await blocking_reply(request, interest, compute)


@routes.get("/v1/health/state/{state}")
async def health_state(request: web.Request) -> web.Response:
    agent = agent_of(request)
    state = request.match_info["state"]
    if state not in HEALTH_STATES:
        raise ConsulError(400, "Bad state")

    def compute():
        every = render.all_checks(agent) + [c for _, d in sorted(agent.store.catalog_nodes.items()) for c in catalog.checks_of(d)]
        items = [c for c in every if state == "any" or c["Status"] == state]
        items, filtered = _readable(request, items, check_visible(request))
        return agent.store.topic_index("checks"), items, filtered

    return await blocking_reply(request, on_topics("checks"), compute)


@routes.get("/v1/health/node/{node}")
async def health_node(request: web.Request) -> web.Response:
    agent = agent_of(request)
    node_name = request.match_info["node"]

    def compute():
        external = agent.store.catalog_nodes.get(node_name)
        items = render.all_checks(agent) if node_name == agent.config.node_name else (
            catalog.checks_of(external) if external else [])
        items, filtered = _readable(request, items, check_visible(request))
        return agent.store.topic_index("checks"), items, filtered

    return await blocking_reply(request, on_topics("checks"), compute)


# ---- catalog writes: nodes other than this agent's ------------------------------------------------


def _own_node(agent, name: str) -> None:
    if name == agent.config.node_name:
        raise ConsulError(400, "this agent's own node is written through /v1/agent/service/register and "
                               "/v1/agent/check/register, which run its checks; the catalog API writes other nodes")


@routes.put("/v1/catalog/register")
async def catalog_register(request: web.Request) -> web.Response:
    agent = agent_of(request)
    node, service, checks = catalog.parse_register(read_json(await request.read()), agent.config.datacenter)
    _own_node(agent, node["Node"])
    identity = request["identity"]
    identity.require("node", "write", node["Node"])
    if service is not None:
        identity.require("service", "write", service["Service"])
    old = agent.store.catalog_nodes.get(node["Node"])
    doc = catalog.merged(old, node, service, checks, agent.store.index + 1)
    agent.store.doc_put("catalog_nodes", doc, catalog.topics_of(old) | catalog.topics_of(doc))
    return json_reply(True)


@routes.put("/v1/catalog/deregister")
async def catalog_deregister(request: web.Request) -> web.Response:
    agent = agent_of(request)
    body = read_json(await request.read())
    fields = {str(k).lower(): v for k, v in body.items()} if isinstance(body, dict) else {}
    name = str(fields.get("node") or "")
    if not name:
        raise ConsulError(400, "Must provide node")
    _own_node(agent, name)
    request["identity"].require("node", "write", name)
    old = agent.store.catalog_nodes.get(name)
    if old is None:
        return json_reply(True)
    service_id, check_id = str(fields.get("serviceid") or ""), str(fields.get("checkid") or "")
    if not service_id and not check_id:
        agent.store.doc_delete("catalog_nodes", name, catalog.topics_of(old))
        return json_reply(True)
    services, checks = dict(old["Services"]), dict(old["Checks"])
    if service_id in services:
        request["identity"].require("service", "write", services[service_id]["Service"])
        del services[service_id]
        checks = {cid: c for cid, c in checks.items() if c["ServiceID"] != service_id}
    checks.pop(check_id, None)
    doc = {**{k: v for k, v in old.items() if k not in ("CreateIndex", "ModifyIndex")}, "Services": services,
           "Checks": checks}
    agent.store.doc_put("catalog_nodes", doc, catalog.topics_of(old))
    return json_reply(True)


@routes.get("/v1/status/leader")
async def status_leader(request: web.Request) -> web.Response:
    return json_reply(render.leader_addr(agent_of(request)))


@routes.get("/v1/status/peers")
async def status_peers(request: web.Request) -> web.Response:
    return json_reply([render.leader_addr(agent_of(request))])
