"""/v1/txn: KV operations applied all or nothing, at one index, as Consul's state store runs them.

Each operation sees what the ones before it in the same transaction did. Every failing operation
is reported (`OpIndex`, `What`, Consul's texts) and then nothing is written: the answer is 409 with
`Results: null`. A transaction that succeeds writes every key it changed in one SQLite
transaction, so SIGKILL leaves either all of it or none. Results carry the entries each operation
touched; only `get` and `get-or-empty` carry values, as in Consul.

Node, Service and Check operations may `get` (this agent's node or one registered through the
catalog); their writes and Session operations are refused as an error of that operation (README).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from meshspec.runtime.agent import catalog, render
from meshspec.runtime.agent.acl import Identity
from meshspec.runtime.agent.core import Agent
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.http import agent_of, json_reply, read_json
from meshspec.runtime.agent.routes_kv import MAX_VALUE_SIZE
from meshspec.runtime.agent.store import kv_entry_of

routes = web.RouteTableDef()
MAX_OPS = 64  # Consul's maxTxnOps
WRITES = {"set", "cas", "lock", "unlock", "delete", "delete-cas", "delete-tree"}
READS = {"get", "get-or-empty", "get-tree", "check-index", "check-session", "check-not-exists"}
OTHER_KINDS = ("Node", "Service", "Check", "Session")


class OpFailed(Exception):
    """One operation's failure, in Consul's words."""


def parse_ops(raw: Any) -> list[dict[str, Any]]:
    """The request body → KV operations (other kinds kept as {"kind": ...}); Consul's 400/413."""
    if not isinstance(raw, list):
        raise ConsulError(400, "Failed to parse body: json: cannot unmarshal into Go value of type api.TxnOps")
    if len(raw) > MAX_OPS:
        raise ConsulError(413, f"Transaction contains too many operations ({len(raw)} > {MAX_OPS})")
    ops = []
    for item in raw:
        fields = {str(k).lower(): v for k, v in item.items()} if isinstance(item, dict) else {}
        if "kv" not in fields:
            kind = next((k for k in OTHER_KINDS if k.lower() in fields), None)
            body = fields.get(kind.lower()) if kind else None
            ops.append({"kind": kind, "op": {str(k).lower(): v for k, v in body.items()} if isinstance(body, dict) else {}})
            continue
        kv = {str(k).lower(): v for k, v in (fields["kv"] or {}).items()}
        value = kv.get("value")
        if value is not None:
            try:
                value = base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError) as err:
                raise ConsulError(400, f"Failed to parse body: failed to decode value: {err}") from None
        key = str(kv.get("key") or "")
        if value is not None and len(value) > MAX_VALUE_SIZE:
            raise ConsulError(413, f"Value for key {key!r} is too large ({len(value)} > {MAX_VALUE_SIZE} bytes)")
        ops.append({"kind": "KV", "verb": str(kv.get("verb") or ""), "key": key, "value": value or None,
                    "flags": int(kv.get("flags") or 0), "index": int(kv.get("index") or 0),
                    "session": str(kv.get("session") or "")})
    return ops


class Txn:
    """The operations run against a working copy of the KV table (`changed` is what to write) and
    read the catalog."""

    def __init__(self, agent: Agent, identity: Identity) -> None:
        self.agent = agent
        store = self.store = agent.store
        self.identity = identity
        self.index = store.index + 1
        self.kv = dict(store.kv)  # entries are replaced, never changed in place
        self.changed: dict[str, dict[str, Any] | None] = {}

    def run(self, ops: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
        results: list[dict] = []
        errors: list[dict] = []
        for i, op in enumerate(ops):
            try:
                results += self._op(op)
            except OpFailed as err:
                errors.append({"OpIndex": i, "What": str(err)})
        return results, errors

    def _op(self, op: dict[str, Any]) -> list[dict]:
        if op["kind"] is None:
            raise OpFailed("no operation specified")
        if op["kind"] != "KV":
            return self._catalog_get(op["kind"], op["op"])
        verb, key = op["verb"], op["key"]
        if verb not in WRITES | READS:
            raise OpFailed(f"unknown KV verb {verb!r}".replace("'", '"'))
        try:
            self.identity.require("key", "write" if verb in WRITES else "read", key)
        except ConsulError as denied:
            raise OpFailed(denied.message) from None
        entry = self.kv.get(key)
        if verb == "get-tree":
            return [{"KV": render.kv_entry(self.kv[k])} for k in sorted(self.kv) if k.startswith(key)]
        if verb in ("get", "get-or-empty"):
            if entry is None and verb == "get":
                raise OpFailed(f'key "{key}" doesn\'t exist')
            shown = entry or kv_entry_of(key, None, op["flags"], 0, 0, 0, None)
            return [{"KV": render.kv_entry(shown)}]
        if verb == "check-not-exists":
            if entry is not None:
                raise OpFailed(f'key "{key}" exists')
            return []
        if verb == "check-index":
            if entry is None:
                raise OpFailed(f'failed to check index, key "{key}" doesn\'t exist')
            if entry["ModifyIndex"] != op["index"]:
                raise OpFailed(f'failed index check for key "{key}", current modify index '
                               f'{entry["ModifyIndex"]} != {op["index"]}')
            return [self._shown(entry)]
        if verb == "check-session":
            if entry is None:
                raise OpFailed(f'failed to check session, key "{key}" doesn\'t exist')
            if (entry["Session"] or "") != op["session"]:
                raise OpFailed(f'failed session check for key "{key}", current session '
                               f'"{entry["Session"] or ""}" != "{op["session"]}"')
            return [self._shown(entry)]
        return self._write(verb, key, entry, op)

    def _catalog_get(self, kind: str, op: dict[str, Any]) -> list[dict]:
        """A Node, Service or Check `get`, on this agent's node or one the catalog holds."""
        verb = str(op.get("verb") or "")
        if kind == "Session" or verb != "get":
            raise OpFailed(f"{kind} {verb or 'operation'}: this agent's transactions run every KV verb and the get "
                           f"of Node, Service and Check, not this one")
        body = {str(k).lower(): v for k, v in (op.get(kind.lower()) or {}).items()}
        node = str(op.get("node") or "") if kind == "Service" else str(body.get("node") or "")
        local = node == self.agent.config.node_name
        external = self.store.catalog_nodes.get(node)
        try:
            if kind == "Node":
                self.identity.require("node", "read", node)
                if not local and external is None:
                    raise OpFailed(f'node "{node}" doesn\'t exist')
                return [{"Node": render.node(self.agent) if local else catalog.node_view(external)}]
            if kind == "Service":
                service_id = str(body.get("id") or "")
                found = (self.store.services.get(service_id) if local
                         else (external or {"Services": {}})["Services"].get(service_id))
                if found is None:
                    raise OpFailed(f'service "{service_id}" on node "{node}" doesn\'t exist')
                self.identity.require("service", "read", found["Service"])
                return [{"Service": render.node_service(found)}]
            check_id = str(body.get("checkid") or "")
            checks = render.all_checks(self.agent) if local else (catalog.checks_of(external) if external else [])
            check = next((c for c in checks if c["CheckID"] == check_id), None)
            if check is None:
                raise OpFailed(f'check "{check_id}" on node "{node}" doesn\'t exist')
            if check["ServiceName"]:
                self.identity.require("service", "read", check["ServiceName"])
            else:
                self.identity.require("node", "read", node)
            return [{"Check": check}]
        except ConsulError as denied:
            raise OpFailed(denied.message) from None

    def _write(self, verb: str, key: str, entry: dict[str, Any] | None, op: dict[str, Any]) -> list[dict]:
        if verb == "delete":
            self._delete([key] if entry else [])
            return []
        if verb == "delete-tree":
            self._delete([k for k in self.kv if k.startswith(key)])
            return []
        if verb == "delete-cas":
            if entry is not None and entry["ModifyIndex"] != op["index"]:
                raise OpFailed(f'failed to delete key "{key}", index is stale')
            self._delete([key] if entry else [])  # Consul: a key already gone is deleted, whatever the index
            return []
        holder, lock_index = (entry["Session"], entry["LockIndex"]) if entry else (None, 0)
        if verb == "cas" and ((op["index"] == 0) != (entry is None)
                              or (entry is not None and entry["ModifyIndex"] != op["index"])):
            raise OpFailed(f'failed to set key "{key}", index is stale')
        if verb in ("lock", "unlock"):
            if not op["session"]:
                raise OpFailed("missing session")
        if verb == "lock":
            if op["session"] not in self.store.sessions:
                raise OpFailed(f'invalid session "{op["session"]}"')
            if holder not in (None, op["session"]):
                raise OpFailed(f'failed to lock key "{key}", lock is already held')
            if holder is None:
                holder, lock_index = op["session"], lock_index + 1
        elif verb == "unlock":
            if entry is None or holder != op["session"]:
                raise OpFailed(f'failed to unlock key "{key}", lock isn\'t held, or is held by another session')
            holder = None
        new = kv_entry_of(key, op["value"], op["flags"], entry["CreateIndex"] if entry else self.index,
                          self.index, lock_index, holder)
        self.kv[key] = self.changed[key] = new
        return [self._shown(new)]

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            del self.kv[key]
            self.changed[key] = None

    @staticmethod
    def _shown(entry: dict[str, Any]) -> dict:
        return {"KV": {**render.kv_entry(entry), "Value": None}}  # only reads carry values


@routes.put("/v1/txn")
async def txn(request: web.Request) -> web.Response:
    agent = agent_of(request)
    ops = parse_ops(read_json(await request.read()))
    run = Txn(agent, request["identity"])
    results, errors = run.run(ops)
    if errors:
        response = json_reply({"Results": None, "Errors": errors})
        response.set_status(409)
        return response
    if run.changed:
        agent.store.kv_commit(run.index, run.changed)
    return json_reply({"Results": results, "Errors": None}, agent.store.index)
