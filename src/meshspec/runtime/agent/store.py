"""Durable state: services, checks, KV and sessions in SQLite, mirrored in memory for reads.

Every write is one transaction (WAL, synchronous=FULL) committed before the caller answers, so an
acknowledged write survives SIGKILL. Each write takes the next Raft-like index and stamps it on the
"topics" it touched; blocking queries compute their index from those topics.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS services (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checks (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB, flags INTEGER NOT NULL,
    create_index INTEGER NOT NULL, modify_index INTEGER NOT NULL, lock_index INTEGER NOT NULL,
    session TEXT
);
CREATE TABLE IF NOT EXISTS tombstones (key TEXT PRIMARY KEY, idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS acl_tokens (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS acl_policies (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS acl_roles (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS intentions (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS config_entries (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS catalog_nodes (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS coordinates (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS acl_auth_methods (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS acl_binding_rules (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operator (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
"""
#: Tables of JSON documents: table -> (the field that is its key, the blocking-query topic of its writes,
#: its name in a snapshot).
DOC_TABLES = {"acl_tokens": ("AccessorID", "acl", "ACLTokens"), "acl_policies": ("ID", "acl", "ACLPolicies"),
              "acl_roles": ("ID", "acl", "ACLRoles"), "intentions": ("ID", "intentions", "Intentions"),
              "config_entries": ("Key", "config", "ConfigEntries"),
              "catalog_nodes": ("Node", "nodes", "CatalogNodes"),
              "coordinates": ("Node", "coordinates", "Coordinates"), "operator": ("Name", "autopilot", "Operator"),
              "acl_auth_methods": ("Name", "acl", "ACLAuthMethods"), "acl_binding_rules": ("ID", "acl", "ACLBindingRules")}
KV_COLUMNS = "key, value, flags, create_index, modify_index, lock_index, session"

Statement = tuple[str, tuple[Any, ...]]


def service_topic(name: str) -> str:
    return f"service:{name}"


def kv_topic(key: str) -> str:
    return f"kv:{key}"


def session_topic(session_id: str) -> str:
    return f"session:{session_id}"


def private(data_dir: Path) -> None:
    """The store holds every ACL token's SecretID: its directory and files are the agent's alone
    (0700, 0600), as Consul keeps its data dir, and so is whatever SQLite creates later (its -wal
    and -shm files take the database's mode)."""
    data_dir.chmod(0o700)
    for path in data_dir.glob("state.db*"):
        path.chmod(0o600)
    if not (data_dir / "state.db").exists():
        (data_dir / "state.db").touch(mode=0o600)


class Store:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        private(data_dir)
        self._db = sqlite3.connect(data_dir / "state.db", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._migrate()
        self.listeners: list[Callable[[set[str]], None]] = []
        self._load()

    # ---- loading -------------------------------------------------------------------------------
    def _migrate(self) -> None:
        """A data dir written before sessions existed gains the KV column that names a lock's holder."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(kv)")}
        if "session" not in columns:
            self._db.execute("ALTER TABLE kv ADD COLUMN session TEXT")

    def _load(self) -> None:
        meta = dict(self._db.execute("SELECT k, v FROM meta"))
        if "node_id" not in meta:
            self._commit(1, [self._meta("node_id", str(uuid.uuid4()))], {"nodes"})
            meta = dict(self._db.execute("SELECT k, v FROM meta"))
        self.node_id: str = meta["node_id"]
        self.index: int = int(meta.get("index", 1))
        self.topics: dict[str, int] = dict(self._db.execute("SELECT name, idx FROM topics"))
        self.services: dict[str, dict[str, Any]] = {
            sid: json.loads(doc) for sid, doc in self._db.execute("SELECT id, doc FROM services")
        }
        self.checks: dict[str, dict[str, Any]] = {
            cid: json.loads(doc) for cid, doc in self._db.execute("SELECT id, doc FROM checks")
        }
        self.kv: dict[str, dict[str, Any]] = {
            row[0]: kv_entry_of(*row) for row in self._db.execute(f"SELECT {KV_COLUMNS} FROM kv")
        }
        self.tombstones: dict[str, int] = dict(self._db.execute("SELECT key, idx FROM tombstones"))
        self.sessions: dict[str, dict[str, Any]] = {
            sid: json.loads(doc) for sid, doc in self._db.execute("SELECT id, doc FROM sessions")
        }
        self.acl_tokens: dict[str, dict[str, Any]] = dict(self._docs("acl_tokens"))
        self.acl_policies: dict[str, dict[str, Any]] = dict(self._docs("acl_policies"))
        self.acl_roles: dict[str, dict[str, Any]] = dict(self._docs("acl_roles"))
        self.intentions: dict[str, dict[str, Any]] = dict(self._docs("intentions"))
        self.config_entries: dict[str, dict[str, Any]] = dict(self._docs("config_entries"))
        # Nodes other than this agent's, registered through /v1/catalog/register (external services).
        self.catalog_nodes: dict[str, dict[str, Any]] = dict(self._docs("catalog_nodes"))
        # Coordinates sent with /v1/coordinate/update, by node; the operator's settings (autopilot's).
        self.coordinates: dict[str, dict[str, Any]] = dict(self._docs("coordinates"))
        self.operator: dict[str, dict[str, Any]] = dict(self._docs("operator"))
        self.acl_auth_methods: dict[str, dict[str, Any]] = dict(self._docs("acl_auth_methods"))
        self.acl_binding_rules: dict[str, dict[str, Any]] = dict(self._docs("acl_binding_rules"))

    def _docs(self, table: str) -> Iterable[tuple[str, dict[str, Any]]]:
        return ((key, json.loads(doc)) for key, doc in self._db.execute(f"SELECT id, doc FROM {table}"))

    def close(self) -> None:
        self._db.close()

    # ---- the write path ------------------------------------------------------------------------
    @staticmethod
    def _meta(key: str, value: str) -> Statement:
        return ("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (key, value))

    def _commit(self, index: int, statements: Iterable[Statement], topics: set[str]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                db.execute(sql, params)
            db.execute(*self._meta("index", str(index)))
            db.executemany(
                "INSERT OR REPLACE INTO topics (name, idx) VALUES (?, ?)",
                [(t, index) for t in topics if not t.startswith("kv:")],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _publish(self, index: int, topics: set[str]) -> None:
        self.index = index
        for topic in topics:
            if not topic.startswith("kv:"):
                self.topics[topic] = index
        for listener in self.listeners:
            listener(topics)

    def take_index(self) -> int:
        """The next index, committed with nothing else and waking no watcher: the stamp of a change
        kept outside the tables (a Connect root or leaf), durable and never handed out twice, as
        Consul's CA provider takes a Raft index for each certificate it signs."""
        index = self.index + 1
        self._commit(index, [], set())
        self._publish(index, set())
        return index

    def topic_index(self, *topics: str) -> int:
        """The index a blocking query on `topics` reports: the last write that touched any of them."""
        return max([self.topics.get(t, 1) for t in topics] + [1])

    # ---- services and checks -------------------------------------------------------------------
    def _service_topics(self, service_id: str) -> set[str]:
        service = self.services.get(service_id)
        return {service_topic(service["Service"])} if service else {"nodechecks"}

    def put_service(self, service: dict[str, Any], checks: list[dict[str, Any]], drop: Iterable[str]) -> None:
        index = self.index + 1
        old = self.services.get(service["ID"])
        service = {**service, "CreateIndex": old["CreateIndex"] if old else index, "ModifyIndex": index}
        stamped = [self._stamp_check(c, index) for c in checks]
        drop = [cid for cid in drop if cid in self.checks]
        statements = [("INSERT OR REPLACE INTO services (id, doc) VALUES (?, ?)", (service["ID"], json.dumps(service)))]
        statements += [_check_row(c) for c in stamped]
        statements += [("DELETE FROM checks WHERE id = ?", (cid,)) for cid in drop]
        topics = {"services", "checks", service_topic(service["Service"])}
        if old:
            topics.add(service_topic(old["Service"]))
        self._commit(index, statements, topics)
        self.services[service["ID"]] = service
        for cid in drop:
            del self.checks[cid]
        for check in stamped:
            self.checks[check["CheckID"]] = check
        self._publish(index, topics)

    def _stamp_check(self, check: dict[str, Any], index: int) -> dict[str, Any]:
        old = self.checks.get(check["CheckID"])
        status = check.get("Status") or (old["Status"] if old else "critical")
        return {
            **check,
            "Status": status,
            "Output": old["Output"] if old and old["Status"] == status else check.get("Output", ""),
            "CreateIndex": old["CreateIndex"] if old else index,
            "ModifyIndex": index,
        }

    def delete_service(self, service_id: str) -> list[str]:
        """Remove a service and its checks; returns the removed check IDs."""
        service = self.services[service_id]
        check_ids = [cid for cid, c in self.checks.items() if c["ServiceID"] == service_id]
        index = self.index + 1
        statements = [("DELETE FROM services WHERE id = ?", (service_id,))]
        statements += [("DELETE FROM checks WHERE id = ?", (cid,)) for cid in check_ids]
        topics = {"services", "checks", service_topic(service["Service"])}
        self._commit(index, statements, topics)
        del self.services[service_id]
        for cid in check_ids:
            del self.checks[cid]
        self._publish(index, topics)
        return check_ids

    def put_check(self, check: dict[str, Any]) -> None:
        index = self.index + 1
        stamped = self._stamp_check(check, index)
        topics = {"checks"} | self._service_topics(check["ServiceID"])
        self._commit(index, [_check_row(stamped)], topics)
        self.checks[stamped["CheckID"]] = stamped
        self._publish(index, topics)

    def delete_check(self, check_id: str) -> None:
        topics = {"checks"} | self._service_topics(self.checks[check_id]["ServiceID"])
        index = self.index + 1
        self._commit(index, [("DELETE FROM checks WHERE id = ?", (check_id,))], topics)
        del self.checks[check_id]
        self._publish(index, topics)

    def set_check_status(self, check_id: str, status: str, output: str) -> bool:
        """Record a check result. Only a status change is a write (index bump, watchers woken):
        output-only changes are kept in memory, so chatty outputs do not wake watchers constantly."""
        check = self.checks.get(check_id)
        if check is None:
            return False
        if check["Status"] == status:
            check["Output"] = output
            return False
        index = self.index + 1
        updated = {**check, "Status": status, "Output": output, "ModifyIndex": index}
        topics = {"checks"} | self._service_topics(check["ServiceID"])
        self._commit(index, [_check_row(updated)], topics)
        self.checks[check_id] = updated
        self._publish(index, topics)
        return True

    # ---- KV --------------------------------------------------------------------------------------
    def kv_put(self, key: str, value: bytes | None, flags: int, cas: int | None,
               acquire: str | None = None, release: str | None = None) -> bool:
        """Set a key; False when `cas` is not its ModifyIndex, or when the lock asked for is not
        this session's to take (`acquire`: held by another session) or to give back (`release`).
        Acquiring an unlocked key bumps its LockIndex; the holder writing again does not."""
        old = self.kv.get(key)
        if cas is not None and (old["ModifyIndex"] if old else 0) != cas:
            return False
        holder = old["Session"] if old else None
        lock_index = old["LockIndex"] if old else 0
        if acquire is not None:
            if holder not in (None, acquire):
                return False
            if holder is None:
                lock_index, holder = lock_index + 1, acquire
        elif release is not None:
            if holder != release:
                return False
            holder = None
        index = self.index + 1
        entry = kv_entry_of(key, value, flags, old["CreateIndex"] if old else index, index, lock_index, holder)
        statements = [_kv_row(entry), ("DELETE FROM tombstones WHERE key = ?", (key,))]
        topics = {"kv", kv_topic(key)}
        self._commit(index, statements, topics)
        self.kv[key] = entry
        self.tombstones.pop(key, None)
        self._publish(index, topics)
        return True

    def kv_delete(self, key: str, recurse: bool, cas: int | None) -> bool:
        if cas is not None:
            old = self.kv.get(key)
            if old is not None and old["ModifyIndex"] != cas:
                return False  # a key already gone is deleted, whatever the index (Consul's delete-cas)
        keys = [k for k in self.kv if k.startswith(key)] if recurse else [key] if key in self.kv else []
        if not keys:
            return True
        index = self.index + 1
        statements: list[Statement] = []
        for k in keys:
            statements.append(("DELETE FROM kv WHERE key = ?", (k,)))
            statements.append(("INSERT OR REPLACE INTO tombstones (key, idx) VALUES (?, ?)", (k, index)))
        topics = {"kv"} | {kv_topic(k) for k in keys}
        self._commit(index, statements, topics)
        for k in keys:
            del self.kv[k]
            self.tombstones[k] = index
        self._publish(index, topics)
        return True

    def commit_txn(self, index: int, kv: dict[str, dict[str, Any] | None],
                   docs: dict[tuple[str, str], dict[str, Any] | None] | None = None,
                   ended_sessions: Iterable[str] = (), topics: Iterable[str] = ()) -> None:
        """A transaction's writes at `index`, in one SQLite transaction: KV entries (None deletes
        the key), documents of DOC_TABLES by (table, key) (None deletes; stamped here with the index,
        CreateIndex kept), and sessions ended (their keys' fate is in `kv`). `topics`: what else it wakes."""
        statements: list[Statement] = []
        for key, entry in kv.items():
            if entry is None:
                statements.append(("DELETE FROM kv WHERE key = ?", (key,)))
                statements.append(("INSERT OR REPLACE INTO tombstones (key, idx) VALUES (?, ?)", (key, index)))
            else:
                statements.append(_kv_row(entry))
                statements.append(("DELETE FROM tombstones WHERE key = ?", (key,)))
        stamped: dict[tuple[str, str], dict[str, Any] | None] = {}
        for (table, key), doc in (docs or {}).items():
            if doc is None:
                stamped[(table, key)] = None
                statements.append((f"DELETE FROM {table} WHERE id = ?", (key,)))
                continue
            old = getattr(self, table).get(key)
            stamped[(table, key)] = {**doc, "CreateIndex": old["CreateIndex"] if old else index, "ModifyIndex": index}
            statements.append((f"INSERT OR REPLACE INTO {table} (id, doc) VALUES (?, ?)", (key, json.dumps(stamped[(table, key)]))))
        ended = list(ended_sessions)
        statements += [("DELETE FROM sessions WHERE id = ?", (sid,)) for sid in ended]
        woken = set(topics) | ({"kv"} | {kv_topic(k) for k in kv} if kv else set())
        woken |= {DOC_TABLES[table][1] for table, _ in stamped} | ({"sessions"} | {session_topic(s) for s in ended} if ended else set())
        self._commit(index, statements, woken)
        for key, entry in kv.items():
            if entry is None:
                self.kv.pop(key, None)
                self.tombstones[key] = index
            else:
                self.kv[key] = entry
                self.tombstones.pop(key, None)
        for (table, key), doc in stamped.items():
            if doc is None:
                getattr(self, table).pop(key, None)
            else:
                getattr(self, table)[key] = doc
        for sid in ended:
            self.sessions.pop(sid, None)
        self._publish(index, woken)

    def delete_session(self, session_id: str) -> list[str]:
        """End a session and, in the same write, do its Behavior to the keys it holds: `release`
        unlocks them (value kept), `delete` deletes them. Returns those keys."""
        index = self.index + 1
        changed = self.session_ending(session_id, self.kv, index)
        self.commit_txn(index, changed, ended_sessions=[session_id])
        return sorted(changed)

    def session_ending(self, session_id: str, kv: dict[str, dict[str, Any]], index: int) -> dict[str, dict[str, Any] | None]:
        """What ending the session does to the keys it holds in `kv`, at `index`: its Behavior, `release`
        (unlocked, value kept) or `delete`."""
        behavior = self.sessions[session_id]["Behavior"]
        held = [k for k, e in kv.items() if e["Session"] == session_id]
        return {k: None if behavior == "delete" else {**kv[k], "Session": None, "ModifyIndex": index} for k in held}

    def held_by(self, session_id: str) -> list[str]:
        return sorted(k for k, e in self.kv.items() if e["Session"] == session_id)

    def kv_index(self, prefix: str, exact: bool) -> int:
        """Consul's KV query index: the newest entry or tombstone in scope, else the KV table index."""
        def in_scope(k: str) -> bool:
            return k == prefix if exact else k.startswith(prefix)

        found = [e["ModifyIndex"] for k, e in self.kv.items() if in_scope(k)]
        found += [i for k, i in self.tombstones.items() if in_scope(k)]
        return max(found) if found else self.topic_index("kv")


    # ---- sessions ----------------------------------------------------------------------------------
    def put_session(self, session: dict[str, Any]) -> dict[str, Any]:
        index = self.index + 1
        stamped = {**session, "CreateIndex": index, "ModifyIndex": index}
        topics = {"sessions", session_topic(stamped["ID"])}
        self._commit(index, [("INSERT INTO sessions (id, doc) VALUES (?, ?)", (stamped["ID"], json.dumps(stamped)))],
                     topics)
        self.sessions[stamped["ID"]] = stamped
        self._publish(index, topics)
        return stamped

    # ---- documents: ACL tokens and policies, intentions ------------------------------------------
    def doc_put(self, table: str, doc: dict[str, Any], topics: Iterable[str] = ()) -> dict[str, Any]:
        """Store a document of a DOC_TABLES table, stamped with this write's index (CreateIndex kept
        on update); `topics` are what else the write wakes besides the table's own topic."""
        key = doc[DOC_TABLES[table][0]]
        self.commit_txn(self.index + 1, {}, {(table, key): doc}, topics=topics)
        return getattr(self, table)[key]

    def doc_delete(self, table: str, key: str, topics: Iterable[str] = ()) -> None:
        self.commit_txn(self.index + 1, {}, {(table, key): None}, topics=topics)

    # ---- snapshots ---------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Every table's state at this index, as plain JSON data (KV values base64)."""
        return {
            "Index": self.index,
            "Services": list(self.services.values()),
            "Checks": list(self.checks.values()),
            "KV": [{**e, "Value": base64.b64encode(e["Value"]).decode() if e["Value"] else None}
                   for e in self.kv.values()],
            "Tombstones": self.tombstones,
            "Sessions": list(self.sessions.values()),
            **{name: list(getattr(self, table).values()) for table, (_, _, name) in DOC_TABLES.items()},
        }

    def restore(self, state: dict[str, Any]) -> int:
        """Replace every table with `state` (a `snapshot()`) in one transaction; the restore is a
        write at an index past both the snapshot's and this store's, so every watcher wakes."""
        index = max(self.index, int(state["Index"])) + 1
        kv = [kv_entry_of(e["Key"], base64.b64decode(e["Value"]) if e["Value"] else None, e["Flags"],
                          e["CreateIndex"], e["ModifyIndex"], e["LockIndex"], e.get("Session"))
              for e in state["KV"]]
        statements: list[Statement] = [(f"DELETE FROM {table}", ()) for table in
                                       ("services", "checks", "kv", "tombstones", "sessions", *DOC_TABLES)]
        statements += [("INSERT INTO services (id, doc) VALUES (?, ?)", (sv["ID"], json.dumps(sv)))
                       for sv in state["Services"]]
        statements += [_check_row(c) for c in state["Checks"]]
        statements += [_kv_row(e) for e in kv]
        statements += [("INSERT INTO tombstones (key, idx) VALUES (?, ?)", (k, i)) for k, i in state["Tombstones"].items()]
        statements += [("INSERT INTO sessions (id, doc) VALUES (?, ?)", (se["ID"], json.dumps(se)))
                       for se in state["Sessions"]]
        for table, (field, _, name) in DOC_TABLES.items():
            statements += [(f"INSERT INTO {table} (id, doc) VALUES (?, ?)", (doc[field], json.dumps(doc)))
                           for doc in state.get(name, [])]
        topics = {"services", "checks", "nodechecks", "kv", "sessions", *(t for _, t, _ in DOC_TABLES.values()),
                  *self.topics}
        topics |= {service_topic(sv["Service"]) for sv in [*self.services.values(), *state["Services"]]}
        topics |= {kv_topic(k) for k in [*self.kv, *(e["Key"] for e in kv)]}
        topics |= {session_topic(se["ID"]) for se in [*self.sessions.values(), *state["Sessions"]]}
        self._commit(index, statements, topics)
        self._load()
        self._publish(index, topics)
        return index


def _kv_row(entry: dict[str, Any]) -> Statement:
    return (f"INSERT OR REPLACE INTO kv ({KV_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (entry["Key"], entry["Value"], entry["Flags"], entry["CreateIndex"], entry["ModifyIndex"],
             entry["LockIndex"], entry["Session"]))


def _check_row(check: dict[str, Any]) -> Statement:
    return ("INSERT OR REPLACE INTO checks (id, doc) VALUES (?, ?)", (check["CheckID"], json.dumps(check)))


def kv_entry_of(key, value, flags, create_index, modify_index, lock_index, session) -> dict[str, Any]:
    return {
        "Key": key, "Value": value, "Flags": flags, "LockIndex": lock_index,
        "CreateIndex": create_index, "ModifyIndex": modify_index, "Session": session,
    }
