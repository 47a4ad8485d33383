"""/v1/config*: Consul's config entries, kept as written, with `service-intentions` as a view of the
intentions themselves (as in Consul, where intentions are stored as those entries).

An entry is named by its Kind and Name; upserts and deletes take `?cas=`. Kinds that configure
one service (service-defaults, -resolver, -router, -splitter) need service:write on it to write
and service:read to read; service-intentions needs intentions write/read on its destination; the
other kinds need operator:write to write, and anyone may read them (Consul's rules). The agent
checks what every entry needs to be found again (Kind, Name; `global` for proxy-defaults, `mesh`
for mesh), and the kinds it reads itself as Consul checks them (`config_entries.py`). A service's
discovery chain is compiled from its entries as it is read (`discovery_chain.py`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from meshspec.common.durations import parse_duration
from meshspec.runtime.agent.blocking import on_topics
from meshspec.runtime.agent.config_entries import ENTERPRISE_KINDS, KEYS, check_entry
from meshspec.runtime.agent.core import Agent
from meshspec.runtime.agent.discovery_chain import compile_chain
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.http import agent_of, blocking_reply, json_reply, lower_keys, read_object
from meshspec.runtime.agent.routes_intentions import ACTIONS, put_intention, ranked

routes = web.RouteTableDef()
SERVICE_KINDS = ("service-defaults", "service-resolver", "service-router", "service-splitter")
INTENTIONS = "service-intentions"
KINDS = (*KEYS, *ENTERPRISE_KINDS)
FIXED_NAMES = {"proxy-defaults": "global", "mesh": "mesh"}


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ConsulError(400, f"invalid config entry kind: {kind}")
    return kind


def _require(request: web.Request, kind: str, name: str, level: str) -> None:
    identity = request["identity"]
    if kind in SERVICE_KINDS:
        identity.require("service", level, name)
    elif kind == INTENTIONS:
        identity.require("intention", level, name)
    elif level == "write":
        identity.require("operator", "write")


def _intentions_entry(agent: Agent, destination: str) -> dict[str, Any] | None:
    found = [i for i in agent.store.intentions.values() if i["DestinationName"] == destination]
    if not found:
        return None
    return {"Kind": INTENTIONS, "Name": destination,
            "Sources": [{"Name": i["SourceName"], "Action": i["Action"], "Precedence": i["Precedence"],
                         "Type": "consul", "Description": i["Description"]} for i in ranked(found)],
            "CreateIndex": min(i["CreateIndex"] for i in found), "ModifyIndex": max(i["ModifyIndex"] for i in found)}


def _entry(agent: Agent, kind: str, name: str) -> dict[str, Any] | None:
    if kind == INTENTIONS:
        return _intentions_entry(agent, name)
    stored = agent.store.config_entries.get(f"{kind}/{name}")
    return {**stored["Entry"], "CreateIndex": stored["CreateIndex"], "ModifyIndex": stored["ModifyIndex"]} \
        if stored else None


def _entries(agent: Agent, kind: str) -> list[dict[str, Any]]:
    if kind == INTENTIONS:
        return [e for d in sorted({i["DestinationName"] for i in agent.store.intentions.values()})
                if (e := _intentions_entry(agent, d))]
    return [e for key in sorted(agent.store.config_entries) if key.startswith(kind + "/")
            and (e := _entry(agent, kind, key.split("/", 1)[1]))]


def _cas(request: web.Request, current: dict[str, Any] | None) -> bool | None:
    """None without ?cas=; else whether it matches (0: only when there is no entry yet)."""
    raw = request.query.get("cas")
    if raw is None:
        return None
    if not raw.isdigit():
        raise ConsulError(400, f'strconv.ParseUint: parsing "{raw}": invalid syntax')
    return (current["ModifyIndex"] if current else 0) == int(raw)


@routes.put("/v1/config")
async def apply(request: web.Request) -> web.Response:
    agent = agent_of(request)
    body = read_object(await request.read(), "Request decoding failed: the body must be a JSON object")
    fields = lower_keys(body)
    kind, name = str(fields.get("kind") or ""), str(fields.get("name") or "")
    if not kind:
        raise ConsulError(400, "Request decoding failed: Payload does not contain a Kind/kind key at the top level")
    _kind(kind)
    if not name:
        raise ConsulError(400, "Request decoding failed: Name is required")
    if FIXED_NAMES.get(kind, name) != name:
        raise ConsulError(400, f'Request decoding failed: invalid name ("{name}"), only "{FIXED_NAMES[kind]}" is supported')
    _require(request, kind, name, "write")
    check_entry(kind, name, body, lambda k, n: _entry(agent, k, n))
    if _cas(request, _entry(agent, kind, name)) is False:
        return json_reply(False)
    if kind == INTENTIONS:
        _apply_intentions(agent, name, fields.get("sources") or [])
    else:
        entry = {k: v for k, v in body.items() if k not in ("CreateIndex", "ModifyIndex")}
        agent.store.doc_put("config_entries", {"Key": f"{kind}/{name}", "Entry": {**entry, "Kind": kind, "Name": name}})
    return json_reply(True)


def _apply_intentions(agent: Agent, destination: str, sources: list[Any]) -> None:
    """A service-intentions entry: its Sources become the destination's intentions, and only they."""
    wanted = {}
    for source in sources:
        fields = {str(k).lower(): v for k, v in source.items()} if isinstance(source, dict) else {}
        action = str(fields.get("action") or "").lower()
        if not fields.get("name") or action not in ACTIONS:
            raise ConsulError(400, "Request decoding failed: each of Sources needs a Name and an Action of "
                                   "'allow' or 'deny'")
        wanted[str(fields["name"])] = (action, str(fields.get("description") or ""))
    for intention in [i for i in agent.store.intentions.values() if i["DestinationName"] == destination]:
        if intention["SourceName"] not in wanted:
            agent.store.doc_delete("intentions", intention["ID"])
    for source, (action, description) in wanted.items():
        put_intention(agent, source, destination, action, description, {})


@routes.get("/v1/config/{kind}/{name}")
async def read(request: web.Request) -> web.Response:
    agent = agent_of(request)
    kind, name = _kind(request.match_info["kind"]), request.match_info["name"]
    _require(request, kind, name, "read")
    found = _entry(agent, kind, name)
    if found is None:
        raise ConsulError(404, f'Config entry not found for "{kind}" / "{name}"')
    return json_reply(found, agent.store.topic_index("config", "intentions"))


@routes.get("/v1/config/{kind}")
async def list_kind(request: web.Request) -> web.Response:
    agent = agent_of(request)
    kind = _kind(request.match_info["kind"])

    def compute():
        every = _entries(agent, kind)
        readable = [e for e in every if _readable(request, kind, e["Name"])]
        return agent.store.topic_index("config", "intentions"), readable, len(readable) < len(every)

    return await blocking_reply(request, on_topics("config", "intentions"), compute)


def _readable(request: web.Request, kind: str, name: str) -> bool:
    try:
        _require(request, kind, name, "read")
    except ConsulError:
        return False
    return True


@routes.delete("/v1/config/{kind}/{name}")
async def delete(request: web.Request) -> web.Response:
    agent = agent_of(request)
    kind, name = _kind(request.match_info["kind"]), request.match_info["name"]
    _require(request, kind, name, "write")
    cas = _cas(request, _entry(agent, kind, name))
    if cas is False:
        return json_reply(False)
    if kind == INTENTIONS:
        _apply_intentions(agent, name, [])
    elif f"{kind}/{name}" in agent.store.config_entries:
        agent.store.doc_delete("config_entries", f"{kind}/{name}")
    return json_reply(True if cas else {})


@routes.get("/v1/discovery-chain/{service}")
@routes.post("/v1/discovery-chain/{service}")
async def discovery_chain(request: web.Request) -> web.Response:
    """The chain as Consul compiles it in this datacenter (a POST's body overrides protocol, connect
    timeout, mesh gateway mode); its SNI names use the trust domain `<node ID>.consul` (not yet the
    Connect CA's, which Consul's use)."""
    agent = agent_of(request)
    service = request.match_info["service"]
    raw = await request.read() if request.method == "POST" else b""
    overrides = read_object(raw, "Request decode failed: json: cannot unmarshal into Go value of type "
                                 "agent.discoveryChainReadRequest") if raw.strip() else {}
    request["identity"].require("service", "read", service)
    try:
        parse_duration(lower_keys(overrides).get("overrideconnecttimeout"))
    except ValueError as err:
        raise ConsulError(400, f"Request decode failed: {err}") from None

    def compute():
        chain = compile_chain(service, lambda kind, name: _entry(agent, kind, name), agent.config.datacenter,
                              f"{agent.store.node_id}.consul", overrides)
        return agent.store.topic_index("config"), {"Chain": chain}, False

    return await blocking_reply(request, on_topics("config"), compute)
