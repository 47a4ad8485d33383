"""/v1/connect/intentions/*: which service may call which, as Consul keeps and evaluates it.

An intention names a source and a destination (a service name, or `*` for any) and an action,
allow or deny. Where several match a call, the most specific wins (Consul's precedence, in one
namespace: exact → exact 9, `*` → exact 8, exact → `*` 6, `*` → `*` 5); where none does, the
default is the ACL default policy: deny here with ACLs on, allow with them off. Reading needs
`intentions = "read"` on the destination (implied by reading the service), writing `intentions =
"write"`. Intentions are durable, in snapshots, and the source of truth the data plane is to
enforce (issue 16). The legacy endpoints that name an intention by its ID (create with POST, read,
update and delete by ID) work on the same intentions: one per source and destination.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from meshspec.runtime.agent.blocking import on_topics
from meshspec.runtime.agent.core import Agent
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.filter import compile_filter
from meshspec.runtime.agent.http import agent_of, blocking_reply, json_reply, lower_keys, read_object

routes = web.RouteTableDef()
WILDCARD = "*"
ACTIONS = ("allow", "deny")


def precedence(source: str, destination: str) -> int:
    """Consul's precedence of an intention without namespaces: the more exact, the higher."""
    return {(False, False): 9, (True, False): 8, (False, True): 6, (True, True): 5}[
        (source == WILDCARD, destination == WILDCARD)]


def matches(intention: dict[str, Any], source: str | None, destination: str | None) -> bool:
    return (source is None or intention["SourceName"] in (source, WILDCARD)) and \
        (destination is None or intention["DestinationName"] in (destination, WILDCARD))


def ranked(intentions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Highest precedence first; ties in a stable order (names)."""
    return sorted(intentions, key=lambda i: (-i["Precedence"], i["SourceName"], i["DestinationName"]))


def deciding(intentions: list[dict[str, Any]], source: str, destination: str) -> dict[str, Any] | None:
    """The intention that decides whether `source` may call `destination`: the most specific matching one."""
    found = ranked([i for i in intentions if matches(i, source, destination)])
    return found[0] if found else None


def decide(intentions: list[dict[str, Any]], source: str, destination: str, default_allow: bool) -> bool:
    """Whether `source` may call `destination`: the action of the deciding intention, else the default."""
    found = deciding(intentions, source, destination)
    return found["Action"] == "allow" if found else default_allow


def _pair(request: web.Request) -> tuple[str, str]:
    source, destination = request.query.get("source", ""), request.query.get("destination", "")
    if not source:
        raise ConsulError(400, "required query parameter 'source' not set")
    if not destination:
        raise ConsulError(400, "required query parameter 'destination' not set")
    return source, destination


def put_intention(agent: Agent, source: str, destination: str, action: str, description: str,
                  meta: dict[str, Any]) -> dict[str, Any]:
    """Create or replace the intention from `source` to `destination` (its ID kept)."""
    old = _find(agent, source, destination)
    return agent.store.doc_put("intentions", {
        "ID": old["ID"] if old else str(uuid.uuid4()), "Description": description,
        "SourceNS": "default", "SourceName": source, "DestinationNS": "default", "DestinationName": destination,
        "SourceType": "consul", "Action": action, "Precedence": precedence(source, destination), "Meta": meta,
    })


def _find(agent: Agent, source: str, destination: str) -> dict[str, Any] | None:
    return next((i for i in agent.store.intentions.values()
                 if i["SourceName"] == source and i["DestinationName"] == destination), None)


def _action(fields: dict[str, Any]) -> str:
    action = str(fields.get("action") or "").lower()
    if action not in ACTIONS:
        raise ConsulError(400, f"Invalid Intention: Action must be set to 'allow' or 'deny', got {action!r}")
    return action


def described(intention: dict[str, Any]) -> str:
    """As Consul's Intention.String() names one in its errors."""
    return (f"{intention['SourceName']} => {intention['DestinationName']} (ID: {intention['ID']}, "
            f"Precedence: {intention['Precedence']}, Action: {intention['Action'].upper()})")


@routes.put("/v1/connect/intentions/exact")
async def upsert(request: web.Request) -> web.Response:
    agent = agent_of(request)
    source, destination = _pair(request)
    request["identity"].require("intention", "write", destination)
    raw = await request.read()
    fields = lower_keys(read_object(raw, "Failed to decode request body: not a JSON object")) if raw.strip() else {}
    put_intention(agent, source, destination, _action(fields), str(fields.get("description") or ""),
                  dict(fields.get("meta") or {}))
    return json_reply(True)


@routes.get("/v1/connect/intentions/exact")
async def read_exact(request: web.Request) -> web.Response:
    agent = agent_of(request)
    source, destination = _pair(request)
    request["identity"].require("intention", "read", destination)
    found = _find(agent, source, destination)
    if found is None:
        raise ConsulError(404, "Intention not found")
    return json_reply(found, agent.store.topic_index("intentions"))


@routes.delete("/v1/connect/intentions/exact")
async def delete_exact(request: web.Request) -> web.Response:
    agent = agent_of(request)
    source, destination = _pair(request)
    request["identity"].require("intention", "write", destination)
    found = _find(agent, source, destination)
    if found is not None:
        agent.store.doc_delete("intentions", found["ID"])
    return json_reply(True)


@routes.get("/v1/connect/intentions")
async def list_intentions(request: web.Request) -> web.Response:
    agent = agent_of(request)
    predicate = compile_filter(request.query.get("filter"))

    def compute():
        every = ranked(list(agent.store.intentions.values()))
        readable = [i for i in every if request["identity"].can("intention", "read", i["DestinationName"])]
        shown = [i for i in readable if predicate(i)] if predicate else readable
        return agent.store.topic_index("intentions"), shown, len(readable) < len(every)

    return await blocking_reply(request, on_topics("intentions"), compute)


@routes.get("/v1/connect/intentions/match")
async def match(request: web.Request) -> web.Response:
    agent = agent_of(request)
    by = request.query.get("by", "")
    if by not in ("source", "destination"):
        raise ConsulError(400, "required query parameter 'by' must be 'source' or 'destination'")
    names = request.query.getall("name", [])
    if not names:
        raise ConsulError(400, "required query parameter 'name' not set")

    def compute():
        answer = {}
        for name in names:
            found = [i for i in agent.store.intentions.values()
                     if matches(i, name if by == "source" else None, name if by == "destination" else None)]
            answer[name] = [i for i in ranked(found) if request["identity"].can("intention", "read", i["DestinationName"])]
        return agent.store.topic_index("intentions"), answer, False

    return await blocking_reply(request, on_topics("intentions"), compute)


@routes.get("/v1/connect/intentions/check")
async def check(request: web.Request) -> web.Response:
    agent = agent_of(request)
    source, destination = _pair(request)
    request["identity"].require("intention", "read", destination)
    allowed = decide(list(agent.store.intentions.values()), source, destination, default_allow=not agent.acl.enabled)
    return json_reply({"Allowed": allowed}, agent.store.topic_index("intentions"))


# ---- the legacy endpoints, by ID -----------------------------------------------------------------


def _legacy_fields(raw: bytes) -> tuple[dict[str, Any], str, str]:
    fields = lower_keys(read_object(raw, "Failed to decode request body: not a JSON object"))
    source, destination = str(fields.get("sourcename") or ""), str(fields.get("destinationname") or "")
    if not source or not destination:
        raise ConsulError(400, "Invalid Intention: SourceName and DestinationName must be set")
    return fields, source, destination


def _by_id(request: web.Request, level: str) -> dict[str, Any] | None:
    found = agent_of(request).store.intentions.get(request.match_info["id"])
    if found is not None:
        request["identity"].require("intention", level, found["DestinationName"])
    return found


@routes.post("/v1/connect/intentions")
async def create(request: web.Request) -> web.Response:
    """Create an intention, answering its new ID; its source and destination must have none yet."""
    agent = agent_of(request)
    fields, source, destination = _legacy_fields(await request.read())
    request["identity"].require("intention", "write", destination)
    action = _action(fields)
    if (old := _find(agent, source, destination)) is not None:
        raise ConsulError(500, f"duplicate intention found: {described(old)}")
    made = put_intention(agent, source, destination, action, str(fields.get("description") or ""),
                         dict(fields.get("meta") or {}))
    return json_reply({"ID": made["ID"]})


@routes.get("/v1/connect/intentions/{id}")
async def read_by_id(request: web.Request) -> web.Response:
    found = _by_id(request, "read")
    if found is None:
        raise ConsulError(404, "Intention not found")
    return json_reply(found, agent_of(request).store.topic_index("intentions"))


@routes.put("/v1/connect/intentions/{id}")
async def update_by_id(request: web.Request) -> web.Response:
    agent = agent_of(request)
    fields, source, destination = _legacy_fields(await request.read())
    current = _by_id(request, "write")
    if current is None:
        raise ConsulError(500, f"Cannot modify non-existent intention: '{request.match_info['id']}'")
    request["identity"].require("intention", "write", destination)
    action = _action(fields)
    if (other := _find(agent, source, destination)) is not None and other["ID"] != current["ID"]:
        raise ConsulError(500, f"duplicate intention found: {described(other)}")
    agent.store.doc_put("intentions", {
        **current, "SourceName": source, "DestinationName": destination, "Action": action,
        "Precedence": precedence(source, destination), "Description": str(fields.get("description") or ""),
        "Meta": dict(fields.get("meta") or {})})
    return json_reply(True)


@routes.delete("/v1/connect/intentions/{id}")
async def delete_by_id(request: web.Request) -> web.Response:
    found = _by_id(request, "write")
    if found is None:
        raise ConsulError(500, f"Cannot delete non-existent intention: '{request.match_info['id']}'")
    agent_of(request).store.doc_delete("intentions", found["ID"])
    return json_reply(True)
