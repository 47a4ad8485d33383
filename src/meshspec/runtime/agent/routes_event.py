"""/v1/event/*: Consul's user events, on a cluster of one node.

A fired event goes to every node whose name, services and tags match its filters (Go regular
expressions, run on RE2); this node keeps the last 256 it received, in memory, as a Consul agent
does (events are gossip, not state: an agent that restarts has none). The list's blocking index is
Consul's pseudo-index, a hash of the newest event's ID, so a watcher waits until it differs, not
until it grows.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import deque
from typing import Any

from aiohttp import web

from meshspec.runtime.agent.blocking import on_topics, parse_blocking
from meshspec.runtime.agent.core import Agent
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.filter import compile_regex
from meshspec.runtime.agent.http import agent_of, json_reply

routes = web.RouteTableDef()
KEPT = 256  # Consul's userEventBuffer
TOPIC = "events"


class EventLog:
    def __init__(self) -> None:
        self.received: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self.ltime = 0  # the node's Lamport clock for user events


EVENTS = web.AppKey("events", EventLog)


def id_to_index(event_id: str) -> int:
    """Consul's api.Event.IDToIndex: the UUID's two halves XORed, the index a watcher waits on."""
    lower = event_id[0:8] + event_id[9:13] + event_id[14:18]
    upper = event_id[19:23] + event_id[24:36]
    return int(lower, 16) ^ int(upper, 16)


def _filter(raw: str, what: str) -> Any:
    if not raw:
        return None
    try:
        return compile_regex(raw)
    except ValueError as err:
        raise ConsulError(500, f"Invalid {what} filter: {err}") from None


def reaches(agent: Agent, node: Any, service: Any, tag: Any) -> bool:
    """Whether this node receives an event with these filters (Consul's shouldProcessUserEvent)."""
    if node is not None and not node.search(agent.config.node_name):
        return False
    if service is None:
        return True
    return any(service.search(s["Service"]) and (tag is None or any(tag.search(t) for t in s["Tags"]))
               for s in agent.store.services.values())


@routes.put("/v1/event/fire/{name}")
async def fire(request: web.Request) -> web.Response:
    agent = agent_of(request)
    name = request.match_info["name"]
    request["identity"].require("event", "write", name)
    query = request.query
    if query.get("tag") and not query.get("service"):
        raise ConsulError(500, "Cannot provide tag filter without service filter.")
    node, service, tag = _filter(query.get("node", ""), "node"), _filter(query.get("service", ""), "service"), \
        _filter(query.get("tag", ""), "tag")
    payload = await request.read()
    log = request.app[EVENTS]
    log.ltime += 1
    event = {"ID": str(uuid.uuid4()), "Name": name, "Payload": base64.b64encode(payload).decode() if payload else None,
             "NodeFilter": query.get("node", ""), "ServiceFilter": query.get("service", ""),
             "TagFilter": query.get("tag", ""), "Version": 1, "LTime": log.ltime}
    if reaches(agent, node, service, tag):
        log.received.append(event)
        agent.hub.notify({TOPIC})
    return json_reply(event)


@routes.get("/v1/event/list")
async def event_list(request: web.Request) -> web.Response:
    agent = agent_of(request)
    params = parse_blocking(request.query)
    name = request.query.get("name", "")
    log = request.app[EVENTS]

    def compute() -> tuple[int, list[dict[str, Any]], bool]:
        found = [e for e in log.received if not name or e["Name"] == name]
        readable = [e for e in found if request["identity"].can("event", "read", e["Name"])]
        # 1, not 0, with no events: a watcher passing 0 would not wait, and would loop hot (Consul's choice)
        return (id_to_index(found[-1]["ID"]) if found else 1), readable, len(readable) < len(found)

    index, events, filtered = compute()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + params.wait
    while params.index and index == params.index and (remaining := deadline - loop.time()) > 0:
        await agent.hub.wait(on_topics(TOPIC), remaining)
        index, events, filtered = compute()
    return json_reply(events, index, filtered)
