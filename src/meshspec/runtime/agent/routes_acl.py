"""/v1/acl/*: tokens and policies, as Consul's ACL system keeps them.

Policies hold rules in Consul's rule language (`acl.parse_rules`); tokens link policies and
service or node identities. Both are durable (the store) and answer with Consul's fields. The
builtin `global-management` policy and the agent's management token (the one it was started
with, "Initial Management Token") are listed but cannot be changed or deleted; the anonymous
token may be given policies, which every request without a token then holds. Reads need
`acl:read`, writes `acl:write`; `token/self` needs only the token itself. Roles bundle policies and
identities for tokens to link. Auth methods, binding rules and token expiry are not offered (README).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from meshspec.common.durations import go_duration, parse_duration
from meshspec.runtime.agent.acl import (
    ANONYMOUS_ACCESSOR,
    ANONYMOUS_SECRET,
    MANAGEMENT_POLICY_ID,
    MANAGEMENT_POLICY_NAME,
    expired,
    parse_rules,
    request_token,
)
from meshspec.runtime.agent.blocking import on_topics
from meshspec.runtime.agent.core import Agent
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.http import agent_of, blocking_reply, json_reply, read_json

routes = web.RouteTableDef()
VALID_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,128}$")
MANAGEMENT_RULES = "acl = \"write\"\noperator = \"write\"\nkeyring = \"write\"\nmesh = \"write\"\npeering = \"write\"\n" + "".join(
    f'{r}_prefix "" {{ policy = "write" }}\n' for r in ("agent", "event", "key", "node", "query", "service", "session"))


def acl_fields(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ConsulError(400, "Request decode failed: json: cannot unmarshal into Go value of type structs.ACL")
    return {str(k).lower(): v for k, v in body.items()}


def _hash(doc: dict[str, Any], keys: tuple[str, ...]) -> str:
    return base64.b64encode(hashlib.blake2b(json.dumps([doc.get(k) for k in keys], sort_keys=True).encode(),
                                            digest_size=32).digest()).decode()


def _enabled(agent: Agent) -> None:
    if not agent.acl.enabled:
        raise ConsulError(401, "ACL support disabled")


def acl_agent(request: web.Request, level: str) -> Agent:
    """The agent, once ACLs are on and the token holds `acl:<level>`."""
    agent = agent_of(request)
    _enabled(agent)
    request["identity"].require("acl", level)
    return agent


# ---- policies ------------------------------------------------------------------------------------


def _builtin_policy() -> dict[str, Any]:
    return {"ID": MANAGEMENT_POLICY_ID, "Name": MANAGEMENT_POLICY_NAME,
            "Description": "Builtin Policy that grants unlimited access", "Rules": MANAGEMENT_RULES,
            "Hash": _hash({"Rules": MANAGEMENT_RULES}, ("Rules",)), "CreateIndex": 1, "ModifyIndex": 1}


def _policies(agent: Agent) -> dict[str, dict[str, Any]]:
    return {MANAGEMENT_POLICY_ID: _builtin_policy(), **agent.store.acl_policies}


def _unique_name(kind: str, fields: dict[str, Any], existing: dict[str, dict[str, Any]], own_id: str | None) -> str:
    """A policy's or role's Name: valid, and no other one of its kind holds it."""
    name = str(fields.get("name") or "")
    if not VALID_NAME.match(name):
        raise ConsulError(400, f"Invalid {kind}: invalid Name. Only alphanumeric characters, '-' and '_' are allowed")
    if any(d["Name"] == name and d["ID"] != own_id for d in existing.values()):
        raise ConsulError(400, f'Invalid {kind}: A {kind} with Name "{name}" already exists')
    return name


def _policy_body(agent: Agent, body: Any, policy_id: str | None) -> dict[str, Any]:
    fields = acl_fields(body)
    name = _unique_name("Policy", fields, _policies(agent), policy_id)
    rules = str(fields.get("rules") or "")
    try:
        parse_rules(rules)
    except ValueError as err:
        raise ConsulError(400, f"Invalid Policy: {err}") from None
    policy = {"ID": policy_id or str(uuid.uuid4()), "Name": name, "Description": str(fields.get("description") or ""),
              "Rules": rules}
    if fields.get("datacenters"):
        policy["Datacenters"] = [str(d) for d in fields["datacenters"]]
    policy["Hash"] = _hash(policy, ("Name", "Description", "Rules", "Datacenters"))
    return policy


def or_404(found: dict[str, Any] | None, message: str = "ACL not found") -> dict[str, Any]:
    """An ACL object that was asked for, or Consul's 404."""
    if found is None:
        raise ConsulError(404, message)
    return found


async def acl_list(request: web.Request, listing: Callable[[], list[dict[str, Any]]]) -> web.Response:
    """A list of ACL objects as a blocking query (acl:read): it answers again when any ACL object changes."""
    agent = acl_agent(request, "read")
    return await blocking_reply(request, on_topics("acl"), lambda: (agent.store.topic_index("acl"), listing(), False))


def delete_doc(request: web.Request, table: str, key: str) -> web.Response:
    """Delete an ACL object by its key (acl:write); one already gone is deleted too, as in Consul."""
    agent = acl_agent(request, "write")
    if key in getattr(agent.store, table):
        agent.store.doc_delete(table, key)
    return json_reply(True)


@routes.put("/v1/acl/policy")
async def create_policy(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    policy = _policy_body(agent, read_json(await request.read()), None)
    return json_reply(agent.store.doc_put("acl_policies", policy))


@routes.get("/v1/acl/policy/name/{name}")
async def read_policy_by_name(request: web.Request) -> web.Response:
    agent = acl_agent(request, "read")
    name = request.match_info["name"]
    return json_reply(or_404(next((p for p in _policies(agent).values() if p["Name"] == name), None)))


@routes.get("/v1/acl/policy/{policy_id}")
async def read_policy(request: web.Request) -> web.Response:
    agent = acl_agent(request, "read")
    return json_reply(or_404(_policies(agent).get(request.match_info["policy_id"])))


@routes.put("/v1/acl/policy/{policy_id}")
async def update_policy(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    policy_id = request.match_info["policy_id"]
    if policy_id == MANAGEMENT_POLICY_ID:
        raise ConsulError(400, "Changing the Rules for the builtin global-management policy is not permitted")
    or_404(agent.store.acl_policies.get(policy_id))
    policy = _policy_body(agent, read_json(await request.read()), policy_id)
    return json_reply(agent.store.doc_put("acl_policies", policy))


@routes.delete("/v1/acl/policy/{policy_id}")
async def delete_policy(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    policy_id = request.match_info["policy_id"]
    if policy_id == MANAGEMENT_POLICY_ID:
        raise ConsulError(400, "Delete operation not permitted on the builtin global-management policy")
    if policy_id in agent.store.acl_policies:
        agent.store.doc_delete("acl_policies", policy_id)
    return json_reply(True)


@routes.get("/v1/acl/policies")
async def list_policies(request: web.Request) -> web.Response:
    agent = agent_of(request)
    return await acl_list(request, lambda: sorted(({k: v for k, v in p.items() if k != "Rules"}
                                                   for p in _policies(agent).values()), key=lambda p: p["Name"]))


# ---- tokens --------------------------------------------------------------------------------------


def _builtin_tokens(agent: Agent) -> dict[str, dict[str, Any]]:
    management = {"AccessorID": agent.acl.management_accessor, "SecretID": agent.acl.management_secret,
                  "Description": "Initial Management Token",
                  "Policies": [{"ID": MANAGEMENT_POLICY_ID, "Name": MANAGEMENT_POLICY_NAME}],
                  "Local": False, "CreateTime": _rfc3339(agent.started), "CreateIndex": 1, "ModifyIndex": 1}
    anonymous = {"AccessorID": ANONYMOUS_ACCESSOR, "SecretID": ANONYMOUS_SECRET, "Description": "Anonymous Token",
                 "Local": False, "CreateTime": _rfc3339(agent.started), "CreateIndex": 1, "ModifyIndex": 1}
    return {management["AccessorID"]: management, ANONYMOUS_ACCESSOR: anonymous}


def _tokens(agent: Agent) -> dict[str, dict[str, Any]]:
    """Every live token; an expired one is found no more (Consul reaps it; here it is only hidden)."""
    now = time.time()
    return {**_builtin_tokens(agent), **{a: t for a, t in agent.store.acl_tokens.items() if not expired(t, now)}}


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _expiration(agent: Agent, fields: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """The ExpirationTime of a token being written, by Consul's rules: an ExpirationTTL becomes the
    time it ends (and is not kept), the lifetime must lie within the agent's bounds, and it never
    changes afterwards."""
    ttl, when = fields.get("expirationttl"), fields.get("expirationtime")
    if old is not None:
        if ttl or when and _instant(when) != _instant(old.get("ExpirationTime") or "0001-01-01T00:00:00Z"):
            raise ConsulError(400, "Cannot change expiration time")
        return {"ExpirationTime": old["ExpirationTime"]} if old.get("ExpirationTime") else {}
    now = time.time()
    if ttl:
        if when:
            raise ConsulError(400, "Token Expiration TTL and Expiration Time cannot both be set")
        if _seconds(ttl) < 0:
            raise ConsulError(400, f"Token Expiration TTL '{go_duration(_seconds(ttl))}' should be > 0")
        at = now + _seconds(ttl)
    elif when:
        at = _instant(when)
    else:
        return {}
    lifetime, config = at - now, agent.config
    if lifetime < 0:
        raise ConsulError(400, "ExpirationTime cannot be before CreateTime")
    if lifetime > config.token_max_expiration_ttl:
        raise ConsulError(400, f"ExpirationTime cannot be more than {go_duration(config.token_max_expiration_ttl)} "
                               f"in the future (was {go_duration(lifetime)})")
    if lifetime < config.token_min_expiration_ttl:
        raise ConsulError(400, f"ExpirationTime cannot be less than {go_duration(config.token_min_expiration_ttl)} "
                               f"in the future (was {go_duration(lifetime)})")
    return {"ExpirationTime": _rfc3339_nano(at)}


def _instant(when: Any) -> float:
    try:
        return datetime.fromisoformat(str(when)).timestamp()
    except ValueError:
        raise ConsulError(400, f"Request decode failed: parsing time {json.dumps(when)}: not RFC 3339") from None


def _seconds(ttl: Any) -> float:
    try:
        return parse_duration(ttl)
    except ValueError as err:
        raise ConsulError(400, f"Request decode failed: {err}") from None


def _rfc3339_nano(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _policy_links(agent: Agent, raw: Any) -> list[dict[str, str]]:
    links = []
    policies = _policies(agent)
    for link in raw or []:
        fields = acl_fields(link)
        found = policies.get(str(fields.get("id") or "")) or next(
            (p for p in policies.values() if p["Name"] == fields.get("name")), None)
        if found is None:
            raise ConsulError(400, f"Invalid Policy: no policy with ID {fields.get('id')!r} or Name {fields.get('name')!r}")
        links.append({"ID": found["ID"], "Name": found["Name"]})
    return links


def _identities(raw: Any, field: str) -> list[dict[str, Any]]:
    out = []
    for item in raw or []:
        fields = acl_fields(item)
        name = str(fields.get(field.lower()) or "")
        if not VALID_NAME.match(name.replace(".", "-")):
            raise ConsulError(400, f"{field} identity name {name!r} is not valid")
        if field == "NodeName":  # a node identity names its one datacenter, as Consul requires
            if not fields.get("datacenter"):
                raise ConsulError(400, "Node identity is missing the datacenter field on this token")
            out.append({field: name, "Datacenter": str(fields["datacenter"])})
        else:
            out.append({field: name, **({"Datacenters": list(fields["datacenters"])} if fields.get("datacenters") else {})})
    return out


def _grants(agent: Agent, fields: dict[str, Any]) -> dict[str, Any]:
    """The policies and identities a token or role body links, Consul's omitempty applied."""
    grants = {}
    for key, value in (("Policies", _policy_links(agent, fields.get("policies"))),
                       ("ServiceIdentities", _identities(fields.get("serviceidentities"), "ServiceName")),
                       ("NodeIdentities", _identities(fields.get("nodeidentities"), "NodeName"))):
        if value:
            grants[key] = value
    return grants


def _role_links(agent: Agent, raw: Any) -> list[dict[str, str]]:
    links = []
    for link in raw or []:
        fields = acl_fields(link)
        found = agent.store.acl_roles.get(str(fields.get("id") or "")) or next(
            (r for r in agent.store.acl_roles.values() if r["Name"] == fields.get("name")), None)
        if found is None:
            raise ConsulError(400, f"Invalid Role: no role with ID {fields.get('id')!r} or Name {fields.get('name')!r}")
        links.append({"ID": found["ID"], "Name": found["Name"]})
    return links


def token_body(agent: Agent, body: Any, accessor: str | None, old: dict[str, Any] | None) -> dict[str, Any]:
    fields = acl_fields(body)
    token = {
        "AccessorID": accessor or str(fields.get("accessorid") or uuid.uuid4()),
        "SecretID": (old or {}).get("SecretID") or str(fields.get("secretid") or uuid.uuid4()),
        "Description": str(fields.get("description") or ""),
        "Local": bool(fields.get("local")),
        "CreateTime": (old or {}).get("CreateTime") or _rfc3339(time.time()),
        **_expiration(agent, fields, old),
    }
    token.update(_grants(agent, fields))
    if roles := _role_links(agent, fields.get("roles")):
        token["Roles"] = roles
    token["Hash"] = _hash(token, ("Description", "Local", "Policies", "Roles", "ServiceIdentities", "NodeIdentities"))
    return token


def _token_or_404(agent: Agent, accessor: str) -> dict[str, Any]:
    found = _tokens(agent).get(accessor)
    if found is None:
        raise ConsulError(404, "ACL not found")
    return found


def shown_token(request: web.Request, token: dict[str, Any]) -> dict[str, Any]:
    """A token as this request may see it: its secret only with acl:write (Consul redacts it)."""
    return token if request["identity"].can("acl", "write") else {**token, "SecretID": "<hidden>"}


@routes.put("/v1/acl/token")
async def create_token(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    token = token_body(agent, read_json(await request.read()), None, None)
    if token["AccessorID"] in _tokens(agent) or any(t["SecretID"] == token["SecretID"] for t in _tokens(agent).values()):
        raise ConsulError(400, "Invalid Token: AccessorID or SecretID is already in use")
    return json_reply(agent.store.doc_put("acl_tokens", token))


@routes.put("/v1/acl/token/{accessor}/clone")
async def clone_token(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    source = _token_or_404(agent, request.match_info["accessor"])
    if source["AccessorID"] in _builtin_tokens(agent):
        raise ConsulError(400, "Cannot clone the agent's management token or the anonymous token")
    raw = await request.read()
    fields = acl_fields(read_json(raw)) if raw.strip() else {}
    clone = {**{k: v for k, v in source.items() if k not in ("CreateIndex", "ModifyIndex")},
             "AccessorID": str(uuid.uuid4()), "SecretID": str(uuid.uuid4()), "CreateTime": _rfc3339(time.time()),
             "Description": str(fields.get("description") or source["Description"])}
    return json_reply(agent.store.doc_put("acl_tokens", clone))


@routes.get("/v1/acl/token/self")
async def token_self(request: web.Request) -> web.Response:
    agent = agent_of(request)
    _enabled(agent)
    secret = request_token(request) or ANONYMOUS_SECRET
    found = next((t for t in _tokens(agent).values() if t["SecretID"] == secret), None)
    if found is None:
        raise ConsulError(403, "ACL not found")
    return json_reply(found)


@routes.get("/v1/acl/token/{accessor}")
async def read_token(request: web.Request) -> web.Response:
    agent = acl_agent(request, "read")
    return json_reply(shown_token(request, _token_or_404(agent, request.match_info["accessor"])))


@routes.put("/v1/acl/token/{accessor}")
async def update_token(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    accessor = request.match_info["accessor"]
    if accessor == agent.acl.management_accessor:
        raise ConsulError(400, "The agent's management token comes from its token file and cannot be changed here")
    old = _token_or_404(agent, accessor)
    return json_reply(agent.store.doc_put("acl_tokens", token_body(agent, read_json(await request.read()), accessor, old)))


@routes.delete("/v1/acl/token/{accessor}")
async def delete_token(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    accessor = request.match_info["accessor"]
    if accessor == ANONYMOUS_ACCESSOR:
        raise ConsulError(400, "Delete operation not permitted on the anonymous token")
    if accessor == agent.acl.management_accessor:
        raise ConsulError(400, "The agent's management token comes from its token file and cannot be deleted")
    if accessor in agent.store.acl_tokens:
        agent.store.doc_delete("acl_tokens", accessor)
    return json_reply(True)


@routes.get("/v1/acl/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    agent = agent_of(request)
    policy, method = request.query.get("policy"), request.query.get("authmethod")

    def listing() -> list[dict[str, Any]]:
        listed = [t for t in _tokens(agent).values()
                  if (not policy or any(link["ID"] == policy for link in t.get("Policies") or []))
                  and (not method or t.get("AuthMethod") == method)]
        return [shown_token(request, t) for t in sorted(listed, key=lambda t: t["CreateIndex"])]

    return await acl_list(request, listing)


# ---- roles ---------------------------------------------------------------------------------------


def _role_body(agent: Agent, body: Any, role_id: str | None) -> dict[str, Any]:
    fields = acl_fields(body)
    name = _unique_name("Role", fields, agent.store.acl_roles, role_id)
    role = {"ID": role_id or str(uuid.uuid4()), "Name": name, "Description": str(fields.get("description") or ""),
            **_grants(agent, fields)}
    role["Hash"] = _hash(role, ("Name", "Description", "Policies", "ServiceIdentities", "NodeIdentities"))
    return role


@routes.put("/v1/acl/role")
async def create_role(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    return json_reply(agent.store.doc_put("acl_roles", _role_body(agent, read_json(await request.read()), None)))


@routes.get("/v1/acl/role/name/{name}")
async def read_role_by_name(request: web.Request) -> web.Response:
    agent = acl_agent(request, "read")
    name = request.match_info["name"]
    return json_reply(or_404(next((r for r in agent.store.acl_roles.values() if r["Name"] == name), None)))


@routes.get("/v1/acl/role/{role_id}")
async def read_role(request: web.Request) -> web.Response:
    agent = acl_agent(request, "read")
    return json_reply(or_404(agent.store.acl_roles.get(request.match_info["role_id"])))


@routes.put("/v1/acl/role/{role_id}")
async def update_role(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    role_id = request.match_info["role_id"]
    or_404(agent.store.acl_roles.get(role_id))
    return json_reply(agent.store.doc_put("acl_roles", _role_body(agent, read_json(await request.read()), role_id)))


@routes.delete("/v1/acl/role/{role_id}")
async def delete_role(request: web.Request) -> web.Response:
    return delete_doc(request, "acl_roles", request.match_info["role_id"])


@routes.get("/v1/acl/roles")
async def list_roles(request: web.Request) -> web.Response:
    agent, policy = agent_of(request), request.query.get("policy")
    return await acl_list(request, lambda: sorted((r for r in agent.store.acl_roles.values() if not policy or any(
        link["ID"] == policy for link in r.get("Policies") or [])), key=lambda r: r["Name"]))


@routes.put("/v1/acl/bootstrap")
async def bootstrap(request: web.Request) -> web.Response:
    agent = agent_of(request)
    _enabled(agent)
    # The agent was bootstrapped when it started: its management token came from its token file.
    raise ConsulError(403, "Permission denied: ACL bootstrap no longer allowed (reset index: 1)")
