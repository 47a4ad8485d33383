"""/v1/acl/auth-method*, /v1/acl/binding-rule*, /v1/acl/login and /v1/acl/logout: tokens that a
client gets by proving who it is, rather than from an operator (auth_methods.py holds the rules).

Login verifies the bearer token with the named method, evaluates every binding rule of that method
against the claims it maps, and creates a token holding what the matching rules bind (service or
node identities, roles and policies that exist), local unless the method says `global`, expiring
after the method's MaxTokenTTL. No matching rule: 403, and no token. Logout deletes a token that
login created. Deleting a method deletes its rules and the tokens it issued.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from meshspec.runtime.agent.acl import request_token
from meshspec.runtime.agent.auth_methods import bound, method_of, rule_of, variables, verified_claims
from meshspec.runtime.agent.core import Agent
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.http import agent_of, json_reply, read_json
from meshspec.runtime.agent.routes_acl import (
    VALID_NAME,
    acl_agent,
    acl_fields,
    acl_list,
    delete_doc,
    or_404,
    token_body,
)

routes = web.RouteTableDef()


# ---- auth methods --------------------------------------------------------------------------------


def _method_or_404(agent: Agent, name: str) -> dict[str, Any]:
    return or_404(agent.store.acl_auth_methods.get(name), "ACL auth method not found")


def _put_method(agent: Agent, fields: dict[str, Any], name: str) -> dict[str, Any]:
    if not VALID_NAME.match(name):
        raise ConsulError(400, "Invalid Auth Method: Name invalid")
    return agent.store.doc_put("acl_auth_methods", method_of(fields, name))


@routes.put("/v1/acl/auth-method")
async def create_method(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    fields = acl_fields(read_json(await request.read()))
    name = str(fields.get("name") or "")
    if name in agent.store.acl_auth_methods:
        raise ConsulError(400, f"Invalid Auth Method: Method {name!r} already exists")
    return json_reply(_put_method(agent, fields, name))


@routes.get("/v1/acl/auth-method/{name}")
async def read_method(request: web.Request) -> web.Response:
    agent = acl_agent(request, "read")
    return json_reply(_method_or_404(agent, request.match_info["name"]), agent.store.topic_index("acl"))


@routes.put("/v1/acl/auth-method/{name}")
async def update_method(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    name = request.match_info["name"]
    old = _method_or_404(agent, name)
    fields = acl_fields(read_json(await request.read()))
    if str(fields.get("type") or old["Type"]) != old["Type"]:
        raise ConsulError(400, "Invalid Auth Method: cannot change type")
    return json_reply(_put_method(agent, {"type": old["Type"], **fields}, name))


@routes.delete("/v1/acl/auth-method/{name}")
async def delete_method(request: web.Request) -> web.Response:
    """The method goes with its binding rules and every token it issued, in one write."""
    agent = acl_agent(request, "write")
    name = request.match_info["name"]
    if name in agent.store.acl_auth_methods:
        docs: dict[tuple[str, str], dict[str, Any] | None] = {("acl_auth_methods", name): None}
        docs |= {("acl_binding_rules", r["ID"]): None for r in agent.store.acl_binding_rules.values() if r["AuthMethod"] == name}
        docs |= {("acl_tokens", t["AccessorID"]): None for t in agent.store.acl_tokens.values() if t.get("AuthMethod") == name}
        agent.store.commit_txn(agent.store.index + 1, {}, docs)
    return json_reply(True)


@routes.get("/v1/acl/auth-methods")
async def list_methods(request: web.Request) -> web.Response:
    agent = agent_of(request)
    return await acl_list(request, lambda: [{k: v for k, v in m.items() if k != "Config"}
                                            for _, m in sorted(agent.store.acl_auth_methods.items())])


# ---- binding rules -------------------------------------------------------------------------------


def _rule_or_404(agent: Agent, rule_id: str) -> dict[str, Any]:
    return or_404(agent.store.acl_binding_rules.get(rule_id), "ACL binding rule not found")


@routes.put("/v1/acl/binding-rule")
async def create_rule(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    rule = rule_of(acl_fields(read_json(await request.read())), agent.store.acl_auth_methods)
    return json_reply(agent.store.doc_put("acl_binding_rules", {"ID": str(uuid.uuid4()), **rule}))


@routes.get("/v1/acl/binding-rule/{rule_id}")
async def read_rule(request: web.Request) -> web.Response:
    agent = acl_agent(request, "read")
    return json_reply(_rule_or_404(agent, request.match_info["rule_id"]), agent.store.topic_index("acl"))


@routes.put("/v1/acl/binding-rule/{rule_id}")
async def update_rule(request: web.Request) -> web.Response:
    agent = acl_agent(request, "write")
    old = _rule_or_404(agent, request.match_info["rule_id"])
    fields = {"authmethod": old["AuthMethod"], **acl_fields(read_json(await request.read()))}
    if fields["authmethod"] != old["AuthMethod"]:
        raise ConsulError(400, "Invalid Binding Rule: cannot change AuthMethod")
    return json_reply(agent.store.doc_put("acl_binding_rules", {"ID": old["ID"], **rule_of(fields, agent.store.acl_auth_methods)}))


@routes.delete("/v1/acl/binding-rule/{rule_id}")
async def delete_rule(request: web.Request) -> web.Response:
    return delete_doc(request, "acl_binding_rules", request.match_info["rule_id"])


@routes.get("/v1/acl/binding-rules")
async def list_rules(request: web.Request) -> web.Response:
    agent, method = agent_of(request), request.query.get("authmethod")
    return await acl_list(request, lambda: sorted((r for r in agent.store.acl_binding_rules.values()
                                                   if not method or r["AuthMethod"] == method), key=lambda r: r["CreateIndex"]))


# ---- login and logout ----------------------------------------------------------------------------


def _grants(agent: Agent, method: dict[str, Any], found: dict[str, dict[str, Any]]) -> dict[str, list]:
    """What the method's matching binding rules bind: identities, and the roles and policies that exist."""
    grants: dict[str, list] = {"serviceidentities": [], "nodeidentities": [], "roles": [], "policies": []}
    for rule in sorted(agent.store.acl_binding_rules.values(), key=lambda r: r["CreateIndex"]):
        name = bound(rule, found) if rule["AuthMethod"] == method["Name"] else None
        if name is None:
            continue
        if rule["BindType"] == "service":
            grants["serviceidentities"].append({"ServiceName": name})
        elif rule["BindType"] == "node":
            grants["nodeidentities"].append({"NodeName": name, "Datacenter": agent.config.datacenter})
        elif rule["BindType"] == "role" and any(r["Name"] == name for r in agent.store.acl_roles.values()):
            grants["roles"].append({"Name": name})
        elif rule["BindType"] == "policy" and any(p["Name"] == name for p in agent.store.acl_policies.values()):
            grants["policies"].append({"Name": name})
    return grants


@routes.post("/v1/acl/login")
async def login(request: web.Request) -> web.Response:
    agent = agent_of(request)
    if not agent.acl.enabled:
        raise ConsulError(401, "ACL support disabled")
    fields = acl_fields(read_json(await request.read()))
    method = agent.store.acl_auth_methods.get(str(fields.get("authmethod") or ""))
    if method is None:
        raise ConsulError(403, "ACL not found")  # as Consul answers a login to a method it does not have
    found = variables(method, verified_claims(method, str(fields.get("bearertoken") or "")))
    grants = _grants(agent, method, found)
    if not any(grants.values()):
        raise ConsulError(403, "Permission denied")
    meta = dict(fields.get("meta") or {})
    body = {**grants, "description": f"token created via login: {json.dumps(meta, sort_keys=True)}" if meta
            else "token created via login", "local": method["TokenLocality"] != "global",
            **({"expirationttl": method["MaxTokenTTL"]} if method["MaxTokenTTL"] else {})}
    token = {**token_body(agent, body, None, None), "AuthMethod": method["Name"]}
    return json_reply(agent.store.doc_put("acl_tokens", token))


@routes.post("/v1/acl/logout")
async def logout(request: web.Request) -> web.Response:
    """The request's own token, if login made it, is deleted; any other token may not log out."""
    agent = agent_of(request)
    if not agent.acl.enabled:
        raise ConsulError(401, "ACL support disabled")
    secret = request_token(request)
    token = next((t for t in agent.store.acl_tokens.values() if secret and t["SecretID"] == secret), None)
    if token is None:
        raise ConsulError(403, "ACL not found")
    if not token.get("AuthMethod"):
        raise ConsulError(403, "Permission denied")
    agent.store.doc_delete("acl_tokens", token["AccessorID"])
    return json_reply(True)
