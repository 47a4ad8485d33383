"""/v1/txn: KV, Node, Service, Check and Session operations applied all or nothing, at one index,
as Consul's state store runs them.

Each operation sees what the ones before it in the same transaction did. Every failing operation
is reported (`OpIndex`, `What`, Consul's texts) and then nothing is written: the answer is 409 with
`Results: null`. A transaction that succeeds writes everything it changed (keys, nodes, sessions
ended) in one SQLite transaction, so SIGKILL leaves either all of it or none. Results carry the
entries each operation touched; only `get` and `get-or-empty` carry KV values, as in Consul.

Node, Service and Check operations read this agent's node or any other, and write the nodes
registered through the catalog; this agent's own node is written through the agent API, which runs
its checks (as `/v1/catalog/register` refuses it too). A Session `delete` ends the session as
destroying it does: its Behavior on the keys it holds, then its lock delay.
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
from meshspec.runtime.agent.http import agent_of, json_reply, lower_keys, read_json
from meshspec.runtime.agent.routes_kv import MAX_VALUE_SIZE
from meshspec.runtime.agent.store import kv_entry_of

routes = web.RouteTableDef()
MAX_OPS = 64  # Consul's maxTxnOps
WRITES = {"set", "cas", "lock", "unlock", "delete", "delete-cas", "delete-tree"}
READS = {"get", "get-or-empty", "get-tree", "check-index", "check-session", "check-not-exists"}
OTHER_KINDS = ("Node", "Service", "Check", "Session")


CATALOG_WRITES = {"set", "cas", "delete", "delete-cas"}


class OpFailed(Exception):
    """One operation's failure, in Consul's words."""


def _lower(raw: Any) -> dict[str, Any]:
    """An operation's fields, case-insensitively as Go decodes them; anything but an object has none."""
    return lower_keys(raw) if isinstance(raw, dict) else {}


def parse_ops(raw: Any) -> list[dict[str, Any]]:
    """The request body → KV operations (other kinds kept as {"kind": ...}); Consul's 400/413."""
    if not isinstance(raw, list):
        raise ConsulError(400, "Failed to parse body: json: cannot unmarshal into Go value of type api.TxnOps")
    if len(raw) > MAX_OPS:
        raise ConsulError(413, f"Transaction contains too many operations ({len(raw)} > {MAX_OPS})")
    ops = []
    for item in raw:
        fields = _lower(item)
        if "kv" not in fields:
            kind = next((k for k in OTHER_KINDS if k.lower() in fields), None)
            body = fields.get(kind.lower()) if kind else None
            ops.append({"kind": kind, "op": _lower(body)})
            continue
        kv = _lower(fields["kv"])
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
        self.nodes = dict(store.catalog_nodes)  # other nodes' documents, replaced likewise
        self.nodes_changed: dict[str, dict[str, Any] | None] = {}
        self.node_topics: set[str] = set()
        self.ended: dict[str, tuple[dict[str, Any], list[str]]] = {}  # session ID -> (session, keys it held)

    def commit(self) -> None:
        """Write what the operations changed, in one transaction; then the ended sessions' lock delays."""
        if not (self.changed or self.nodes_changed or self.ended):
            return
        self.store.commit_txn(self.index, self.changed, {("catalog_nodes", n): d for n, d in self.nodes_changed.items()},
                              ended_sessions=list(self.ended), topics=self.node_topics)
        for session, held in self.ended.values():
            self.agent.sessions.ended(session, held, "deleted by a transaction")

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
        if op["kind"] == "Session":
            return self._session(op["op"])
        if op["kind"] != "KV":
            verb = str(op["op"].get("verb") or "")
            if verb == "get":
                return self._catalog_get(op["kind"], op["op"])
            if verb not in CATALOG_WRITES:
                raise OpFailed(f'unknown {op["kind"]} verb "{verb}"')
            try:
                return {"Node": self._node_write, "Service": self._service_write, "Check": self._check_write}[op["kind"]](
                    verb, op["op"])
            except ConsulError as denied:
                raise OpFailed(denied.message) from None
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
        body = _lower(op.get(kind.lower()))
        node = str(op.get("node") or "") if kind == "Service" else str(body.get("node") or "")
        local = node == self.agent.config.node_name
        external = self.nodes.get(node)
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

    # ---- catalog writes: other nodes, their services and checks -----------------------------------

    def _refuse_own(self, name: str) -> None:
        if name == self.agent.config.node_name:
            raise OpFailed(f'node "{name}" is this agent\'s own: its services and checks are written through '
                           f'/v1/agent/service/register and /v1/agent/check/register, which run its checks')

    def _other_node(self, name: str) -> dict[str, Any]:
        """The document of a node other than this agent's, which must exist."""
        self._refuse_own(name)
        doc = self.nodes.get(name)
        if doc is None:
            raise OpFailed("Missing node registration")
        return doc

    def _put_node(self, name: str, old: dict[str, Any] | None, doc: dict[str, Any] | None) -> dict[str, Any] | None:
        stamped = None if doc is None else {**doc, "CreateIndex": old["CreateIndex"] if old else self.index,
                                            "ModifyIndex": self.index}
        self.node_topics |= catalog.topics_of(old) | catalog.topics_of(stamped)
        self.nodes_changed[name] = stamped
        if stamped is None:
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = stamped
        return stamped

    @staticmethod
    def _cas_ok(current: dict[str, Any] | None, body: dict[str, Any]) -> bool:
        """Consul's CAS: index 0 only for what does not exist yet, else the current ModifyIndex."""
        wanted = int(body.get("modifyindex") or 0)
        return (current["ModifyIndex"] if current else 0) == wanted

    def _node_write(self, verb: str, op: dict[str, Any]) -> list[dict]:
        body = _lower(op.get("node"))
        name = str(body.get("node") or "")
        self.identity.require("node", "write", name)
        self._refuse_own(name)
        old = self.nodes.get(name)
        if verb in ("set", "cas"):
            if verb == "cas" and not self._cas_ok(old, body):
                raise OpFailed(f'failed to set node "{name}", index is stale')
            node = catalog.node_record(name, body, self.agent.config.datacenter)
            doc = self._put_node(name, old, catalog.merged(old, node, None, [], self.index))
            return [{"Node": catalog.node_view(doc)}]
        if verb == "delete-cas" and old is not None and not self._cas_ok(old, body):
            raise OpFailed(f'failed to delete node "{name}", index is stale')
        if old is not None:
            for service in old["Services"].values():
                self.identity.require("service", "write", service["Service"])
            self._put_node(name, old, None)
        return []

    def _service_write(self, verb: str, op: dict[str, Any]) -> list[dict]:
        name = str(op.get("node") or "")
        doc = self._other_node(name)
        body = _lower(op.get("service"))
        service_id = str(body.get("id") or body.get("service") or "")
        old = doc["Services"].get(service_id)
        if verb in ("set", "cas"):
            service = catalog.parse_node_service(op.get("service"))
            self.identity.require("service", "write", service["Service"])
            if verb == "cas" and not self._cas_ok(old, body):
                raise OpFailed(f'failed to set service "{service["ID"]}" on node "{name}", index is stale')
            node = {k: doc[k] for k in catalog.NODE_FIELDS}
            stored = self._put_node(name, doc, catalog.merged(doc, node, service, [], self.index))
            return [{"Service": render.node_service(stored["Services"][service["ID"]])}]
        if old is None:
            return []
        self.identity.require("service", "write", old["Service"])
        if verb == "delete-cas" and not self._cas_ok(old, body):
            raise OpFailed(f'failed to delete service "{service_id}" on node "{name}", index is stale')
        services = {k: v for k, v in doc["Services"].items() if k != service_id}
        checks = {k: c for k, c in doc["Checks"].items() if c["ServiceID"] != service_id}
        self._put_node(name, doc, {**doc, "Services": services, "Checks": checks})
        return []

    def _check_write(self, verb: str, op: dict[str, Any]) -> list[dict]:
        body = _lower(op.get("check"))
        name, check_id = str(body.get("node") or ""), str(body.get("checkid") or "")
        doc = self._other_node(name)
        old = doc["Checks"].get(check_id)
        if verb in ("set", "cas"):
            service_id = str(body.get("serviceid") or "")
            service = doc["Services"].get(service_id) if service_id else None
            if service_id and service is None:
                raise OpFailed("Missing service registration")
            if service is not None:
                self.identity.require("service", "write", service["Service"])
            else:
                self.identity.require("node", "write", name)
            check = catalog.parse_check(op.get("check"), name, service)
            if verb == "cas" and not self._cas_ok(old, body):
                raise OpFailed(f'failed to set check "{check["CheckID"]}" on node "{name}", index is stale')
            node = {k: doc[k] for k in catalog.NODE_FIELDS}
            stored = self._put_node(name, doc, catalog.merged(doc, node, None, [check], self.index))
            return [{"Check": catalog.check_view(stored, stored["Checks"][check["CheckID"]])}]
        if old is None:
            return []
        owner = doc["Services"].get(old["ServiceID"])
        if owner is not None:
            self.identity.require("service", "write", owner["Service"])
        else:
            self.identity.require("node", "write", name)
        if verb == "delete-cas" and not self._cas_ok(old, body):
            raise OpFailed(f'failed to delete check "{check_id}" on node "{name}", index is stale')
        self._put_node(name, doc, {**doc, "Checks": {k: c for k, c in doc["Checks"].items() if k != check_id}})
        return []

    def _session(self, op: dict[str, Any]) -> list[dict]:
        verb = str(op.get("verb") or "")
        if verb != "delete":
            raise OpFailed(f'unknown Session verb "{verb}"')
        session_id = str(_lower(op.get("session")).get("id") or "")
        session = self.store.sessions.get(session_id)
        if session is None or session_id in self.ended:
            return []  # Consul: deleting a session that is gone is not an error
        try:
            self.identity.require("session", "write", session["Node"])
        except ConsulError as denied:
            raise OpFailed(f"failed to delete session: {denied.message}") from None
        released = self.store.session_ending(session_id, self.kv, self.index)
        for key, entry in released.items():
            if entry is None:
                del self.kv[key]
            else:
                self.kv[key] = entry
            self.changed[key] = entry
        self.ended[session_id] = (session, sorted(released))
        return []

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
            if op["session"] not in self.store.sessions or op["session"] in self.ended:
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
    run.commit()
    return json_reply({"Results": results, "Errors": None}, agent.store.index)
