"""/v1/kv/*: Consul's key/value store (get, recurse, keys+separator, raw, put with cas/flags, lock
acquire/release by a session, delete)."""

from __future__ import annotations

from aiohttp import web

from meshspec.runtime.agent import render
from meshspec.runtime.agent.blocking import on_prefix, on_topics
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.http import agent_of, blocking_reply, json_reply, text_error
from meshspec.runtime.agent.store import kv_topic

routes = web.RouteTableDef()
MAX_VALUE_SIZE = 512 * 1024  # Consul's kv_max_value_size default
MAX_UINT64 = 2**64 - 1


def _flag(request: web.Request, name: str) -> bool:
    return name in request.query and request.query[name].lower() not in ("0", "false")


def _uint(request: web.Request, name: str, message: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConsulError(400, message) from None
    if not 0 <= value <= MAX_UINT64:
        raise ConsulError(400, message)
    return value


def _key_names(keys: list[str], prefix: str, separator: str) -> list[str]:
    """Keys under `prefix`, rolled up at the first `separator` after it (Consul's ?keys&separator=)."""
    out: list[str] = []
    for key in keys:
        if separator:
            cut = key.find(separator, len(prefix))
            if cut >= 0:
                key = key[: cut + len(separator)]
        if not out or out[-1] != key:
            out.append(key)
    return out


@routes.get("/v1/kv/{key:.*}")
async def kv_get(request: web.Request) -> web.StreamResponse:
    agent = agent_of(request)
    key = request.match_info["key"]
    identity = request["identity"]
    listing = _flag(request, "keys") or _flag(request, "recurse")
    if not listing:
        identity.require("key", "read", key)

    def compute():
        store = agent.store
        if not listing:
            entry = store.kv.get(key)
            return store.kv_index(key, exact=True), [render.kv_entry(entry)] if entry else [], False
        found = sorted(k for k in store.kv if k.startswith(key))
        matched = [k for k in found if identity.can("key", "read", k)]
        filtered = len(matched) < len(found)
        if _flag(request, "keys"):
            data = _key_names(matched, key, request.query.get("separator", ""))
        else:
            data = [render.kv_entry(store.kv[k]) for k in matched]
        return store.kv_index(key, exact=False), data, filtered

    interest = on_prefix(kv_topic(key)) if listing else on_topics(kv_topic(key))
    if _flag(request, "raw") and not listing:
        return await _raw(request, interest, compute)
    return await blocking_reply(request, interest, compute, not_found_if_empty=True)


async def _raw(request: web.Request, interest, compute) -> web.StreamResponse:
    """?raw answers the value's bytes alone (after the same blocking wait)."""
    response = await blocking_reply(request, interest, compute, not_found_if_empty=True)
    if response.status != 200:
        return response
    entry = agent_of(request).store.kv.get(request.match_info["key"])
    if entry is None:
        return text_error(404, "")
    raw = web.Response(body=entry["Value"] or b"", content_type="application/octet-stream")
    raw.headers["X-Consul-Index"] = response.headers["X-Consul-Index"]
    return raw


@routes.put("/v1/kv/{key:.*}")
async def kv_put(request: web.Request) -> web.Response:
    agent = agent_of(request)
    key = request.match_info["key"]
    if not key:
        raise ConsulError(400, "Missing key name")
    request["identity"].require("key", "write", key)
    flags = _uint(request, "flags", "Invalid flags") or 0
    cas = _uint(request, "cas", "Invalid cas index")
    acquire, release = request.query.get("acquire"), request.query.get("release")
    if acquire is not None and acquire not in agent.store.sessions:
        raise ConsulError(500, f'invalid session "{acquire}"')
    if acquire is not None and agent.sessions.lock_delayed(key):
        return json_reply(False)  # the session that held it ended less than its lock delay ago
    value = await request.read()
    if len(value) > MAX_VALUE_SIZE:
        raise ConsulError(
            413, f"Request body({len(value)} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. "
            "See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size."
        )
    return json_reply(agent.store.kv_put(key, value or None, flags, cas, acquire, release))


@routes.delete("/v1/kv/{key:.*}")
async def kv_delete(request: web.Request) -> web.Response:
    agent = agent_of(request)
    key = request.match_info["key"]
    request["identity"].require("key", "write", key)
    recurse = _flag(request, "recurse")
    if not key and not recurse:
        raise ConsulError(400, "Missing key name")
    cas = _uint(request, "cas", "Invalid cas index")
    return json_reply(agent.store.kv_delete(key, recurse, cas))
