"""/v1/session/*: create, destroy, renew and read the sessions KV locks are held by."""

from __future__ import annotations

from aiohttp import web

from meshspec.runtime.agent.blocking import on_topics
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.http import agent_of, blocking_reply, json_reply, read_json
from meshspec.runtime.agent.sessions import parse_session
from meshspec.runtime.agent.store import session_topic

routes = web.RouteTableDef()


def _id(request: web.Request, what: str = "session") -> str:
    value = request.match_info.get(what, "")
    if not value:
        raise ConsulError(400, "Missing node name" if what == "node" else "Missing session")
    return value


@routes.put("/v1/session/create")
async def create(request: web.Request) -> web.Response:
    agent = agent_of(request)
    raw = await request.read()
    session = parse_session(read_json(raw) if raw.strip() else None, agent.config.node_name)
    request["identity"].require("session", "write", session["Node"])
    return json_reply({"ID": agent.sessions.create(session)["ID"]})


def _writable(request: web.Request, missing: ConsulError | None) -> tuple[str, dict | None]:
    """The session the path names, once the token may write sessions on its node; a session that
    does not exist raises `missing` (None: the caller answers it)."""
    session_id = _id(request)
    session = agent_of(request).sessions.get(session_id)
    if session is None:
        if missing is not None:
            raise missing
        return session_id, None
    request["identity"].require("session", "write", session["Node"])
    return session_id, session


@routes.put("/v1/session/destroy/{session:.*}")
async def destroy(request: web.Request) -> web.Response:
    agent = agent_of(request)
    # Consul resolves the session to check session:write on its node: with ACLs, an unknown one is an error.
    unknown = ConsulError(500, f'Unknown session "{_id(request)}"') if agent.acl.enabled else None
    session_id, session = _writable(request, unknown)
    if session is not None:
        agent.sessions.destroy(session_id)
    return json_reply(True)


@routes.put("/v1/session/renew/{session:.*}")
async def renew(request: web.Request) -> web.Response:
    agent = agent_of(request)
    session_id, session = _writable(request, ConsulError(404, f"Session id '{_id(request)}' not found"))
    agent.sessions.renew(session_id)
    return json_reply([session], agent.store.topic_index("sessions"))


def _listing(request: web.Request, pick) -> tuple[int, list, bool]:
    agent = agent_of(request)
    found = [s for s in agent.store.sessions.values() if pick(s)]
    readable = [s for s in found if request["identity"].can("session", "read", s["Node"])]
    return agent.store.topic_index("sessions"), sorted(readable, key=lambda s: s["ID"]), len(readable) < len(found)


@routes.get("/v1/session/info/{session:.*}")
async def info(request: web.Request) -> web.Response:
    session_id = _id(request)
    return await blocking_reply(request, on_topics("sessions", session_topic(session_id)),
                                lambda: _listing(request, lambda s: s["ID"] == session_id))


@routes.get("/v1/session/node/{node:.*}")
async def node_sessions(request: web.Request) -> web.Response:
    node = _id(request, "node")
    return await blocking_reply(request, on_topics("sessions"), lambda: _listing(request, lambda s: s["Node"] == node))


@routes.get("/v1/session/list")
async def session_list(request: web.Request) -> web.Response:
    return await blocking_reply(request, on_topics("sessions"), lambda: _listing(request, lambda s: True))
