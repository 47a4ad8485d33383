"""/v1/connect/ca/roots, /v1/agent/connect/ca/*, /v1/agent/connect/authorize: Connect's CA
(connect_ca.py) and the authorization a proxy asks for each inbound connection.

The roots need no token, as in Consul. A leaf needs service:write on the service it names; a
blocking read of it (`?index=` the leaf's) returns when the agent reissues it, past half of its
lifetime, so a proxy watching it rotates its certificate in time. The roots change only when the
agent starts with another CA: a blocking read of them waits out its `wait`. Authorize also needs
service:write on the target; it reads the caller's service from the certificate URI and answers
what the most specific intention says, else the ACL default (Consul's reasons, word for word).
The URI must be of this agent's trust domain (Consul leaves that to the TLS handshake); like Consul,
it does not consult ClientCertSerial (there is no revocation list).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from meshspec.common.connect_certs import NAMESPACE, cert_pem, parse_service_uri
from meshspec.runtime.agent.blocking import parse_blocking
from meshspec.runtime.agent.connect_ca import issued_json, roots_json
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.http import agent_of, blocking_reply, json_reply, lower_keys, read_object
from meshspec.runtime.agent.routes_intentions import decide, deciding, described

routes = web.RouteTableDef()
PEM_CHAIN = "application/pem-certificate-chain"  # RFC 8555's type, Consul's for ?pem=true
_GO_BOOLS = {**dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
             **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False)}  # Go's strconv.ParseBool


def _unchanging(topics: set[str]) -> bool:
    """No write changes the roots: a running agent keeps the CA it started with."""
    return False


async def _roots(request: web.Request) -> web.Response:
    ca = agent_of(request).ca
    return await blocking_reply(request, _unchanging, lambda: (ca.index, roots_json(ca), False))


@routes.get("/v1/connect/ca/roots")
async def roots(request: web.Request) -> web.Response:
    """The roots as JSON, or `?pem=true`: their certificates as one PEM bundle."""
    raw = request.query.get("pem", "")
    if raw and raw not in _GO_BOOLS:
        raise ConsulError(400, "The 'pem' query parameter must be a boolean value")
    if _GO_BOOLS.get(raw, False):
        ca = agent_of(request).ca
        return web.Response(body=cert_pem(ca.root).encode(), content_type=PEM_CHAIN,
                            headers={"X-Consul-Index": str(ca.index)})
    return await _roots(request)


@routes.get("/v1/agent/connect/ca/roots")
async def agent_roots(request: web.Request) -> web.Response:
    return await _roots(request)


@routes.get("/v1/agent/connect/ca/leaf/{service}")
async def leaf(request: web.Request) -> web.Response:
    agent = agent_of(request)
    service = request.match_info["service"]
    request["identity"].require("service", "write", service)
    params = parse_blocking(request.query)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + params.wait
    current = agent.leaves.current(service, time.time())
    # A leaf changes only when it is reissued: a watcher holding this one sleeps until then.
    while params.index and current.index == params.index and (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(min(remaining, current.renew_at - time.time()))
        current = agent.leaves.current(service, time.time())
    return json_reply(issued_json(current), current.index)


@routes.post("/v1/agent/connect/authorize")
async def authorize(request: web.Request) -> web.Response:
    agent = agent_of(request)
    fields = lower_keys(read_object(await request.read(), "Request decode failed: json: cannot unmarshal into Go "
                                                          "value of type structs.ConnectAuthorizeRequest"))
    target = fields.get("target")
    if not target or not isinstance(target, str):
        raise ConsulError(400, "Target service must be specified")
    try:
        source = parse_service_uri(str(fields.get("clientcerturi") or ""))
    except ValueError:
        raise ConsulError(400, "ClientCertURI not a valid Connect identifier") from None
    if source is None:
        raise ConsulError(400, "ClientCertURI not a valid Service identifier")
    request["identity"].require("service", "write", target)
    if source.trust_domain != agent.ca.trust_domain:
        return json_reply({"Authorized": False, "Reason": f"Client certificate is of the trust domain "
                                                          f"{source.trust_domain}, not this cluster's {agent.ca.trust_domain}"})
    # Intentions name services of this agent's one namespace: a caller of another matches none.
    ours = source.namespace == NAMESPACE and source.partition == NAMESPACE
    intentions = list(agent.store.intentions.values()) if ours else []
    matched = deciding(intentions, source.service, target)
    if matched is not None:
        reason = f"Matched L4 intention: {described(matched)}"
    elif agent.acl.enabled:
        reason = "Default behavior configured by ACLs"
    else:
        reason = "ACLs disabled, access is allowed by default"
    allowed = decide(intentions, source.service, target, default_allow=not agent.acl.enabled)
    return json_reply({"Authorized": allowed, "Reason": reason})
