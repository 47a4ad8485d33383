"""HTTP plumbing shared by the routes: Consul's headers, error texts and blocking-query replies."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from meshspec.runtime.agent.acl import FILTERED_HEADER
from meshspec.runtime.agent.blocking import Interest, parse_blocking, run_blocking
from meshspec.runtime.agent.core import Agent
from meshspec.runtime.agent.errors import ConsulError

log = logging.getLogger("meshspec.agent.http")
AGENT_KEY = web.AppKey("agent", Agent)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Query parameters that select data (not the blocking mechanics): they key the wake-up cache.
_NOT_SELECTING = {"index", "wait", "stale", "consistent", "cached", "token", "dc"}


def agent_of(request: web.Request) -> Agent:
    return request.app[AGENT_KEY]


def text_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=message, content_type="text/plain", headers=headers)


def json_reply(data: Any, index: int | None = None, filtered: bool = False) -> web.Response:
    return json_body(json.dumps(data).encode(), index, filtered)


def json_body(body: bytes, index: int | None, filtered: bool) -> web.Response:
    response = web.Response(body=body, content_type="application/json")
    if index is not None:
        response.headers["X-Consul-Index"] = str(index)
    if filtered:
        response.headers[FILTERED_HEADER] = "true"
    return response


@web.middleware
async def consul_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Consul's status codes and texts for every failure, and its index/leader headers on every reply."""
    agent = agent_of(request)
    began = time.perf_counter()
    try:
        _check_datacenter(request, agent)
        if not request.path.startswith("/v1/status/"):
            request["identity"] = agent.acl.identify(request)
        response = await handler(request)
    except ConsulError as exc:
        response = text_error(exc.status, exc.message)
    except web.HTTPMethodNotAllowed as exc:
        response = text_error(405, f"method {request.method} not allowed", {"Allow": ", ".join(sorted(exc.allowed_methods))})
    except web.HTTPNotFound:
        response = text_error(404, "404 page not found")
    except web.HTTPException as exc:
        response = text_error(exc.status, exc.reason)
    except Exception:  # the client gets a plain 500; the traceback stays in the agent's log
        log.exception("internal error serving %s %s", request.method, request.path)
        response = text_error(500, "Internal server error")
    resource = request.match_info.route.resource
    agent.metrics.observe_http(request.method, resource.canonical if resource else "unmatched", time.perf_counter() - began)
    response.headers.setdefault("X-Consul-Index", str(agent.store.index))
    response.headers["X-Consul-KnownLeader"] = "true"
    response.headers["X-Consul-LastContact"] = "0"
    return response


def _check_datacenter(request: web.Request, agent: Agent) -> None:
    dc = request.query.get("dc")
    if dc and dc != agent.config.datacenter:
        raise ConsulError(500, "No path to datacenter")


class WakeCache:
    """When a change wakes many watchers of the same query, compute and encode the answer once."""

    def __init__(self) -> None:
        self._index = -1
        self._entries: dict[Any, tuple[int, bytes, bool, bool]] = {}

    def get(self, key: Any, store_index: int) -> tuple[int, bytes, bool, bool] | None:
        if store_index != self._index:
            self._index, self._entries = store_index, {}
        return self._entries.get(key)

    def put(self, key: Any, value: tuple[int, bytes, bool, bool]) -> None:
        self._entries[key] = value


WAKE_CACHE = web.AppKey("wake_cache", WakeCache)

Compute = Callable[[], tuple[int, Any, bool]]  # -> (index, data, filtered)


async def blocking_reply(request: web.Request, interest: Interest, compute: Compute, not_found_if_empty: bool = False) -> web.Response:
    """Run a read as a Consul blocking query and answer with X-Consul-Index."""
    agent = agent_of(request)
    params = parse_blocking(request.query)
    cache = request.app[WAKE_CACHE]
    key = (request.path, tuple(sorted((k, v) for k, v in request.query.items() if k not in _NOT_SELECTING)),
           request.get("identity"))

    def encoded() -> tuple[int, tuple[bytes, bool, bool]]:
        # Only woken watchers share answers; a plain read always sees fresh check output.
        hit = cache.get(key, agent.store.index) if params.index else None
        if hit is None:
            index, data, filtered = compute()
            empty = data is None or data == [] or data == {}
            hit = (index, json.dumps(data).encode(), filtered, empty)
            cache.put(key, hit)
        return hit[0], hit[1:]

    index, (body, filtered, empty) = await run_blocking(agent.hub, params, interest, encoded)
    if not_found_if_empty and empty:
        response = text_error(404, "")
        response.headers["X-Consul-Index"] = str(index)
        return response
    return json_body(body, index, filtered)


def read_json(raw: bytes) -> Any:
    """Decode a request body, answering Consul's 400 "Request decode failed: ..." when malformed."""
    if not raw.strip():
        raise ConsulError(400, "Request decode failed: EOF")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConsulError(400, f"Request decode failed: {exc}") from None


def read_object(raw: bytes, not_an_object: str) -> dict[str, Any]:
    """A request body that must be a JSON object; `not_an_object` is Consul's 400 text for any other JSON."""
    body = read_json(raw)
    if not isinstance(body, dict):
        raise ConsulError(400, not_an_object)
    return body


def lower_keys(fields: dict[str, Any]) -> dict[str, Any]:
    """Go's JSON decoding matches field names case-insensitively: look them up lowercased."""
    return {str(k).lower(): v for k, v in fields.items()}
