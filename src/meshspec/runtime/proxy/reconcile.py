"""The controller's pure step: what to change in HAProxy so its servers match Consul's health.

reconcile(shape, servers, endpoints, expired) -> the runtime-API commands, per backend; no I/O
(unit-tested in tests/proxy/test_render.py). Desired state per instance: Consul passing -> ready;
warning -> drain (keeps its sessions, gets no new ones); critical -> maint. An instance Consul no
longer lists (deregistered) -> drain for the drain grace (sticky MCP sessions still reach it while
it is still up), then maint; servers added at runtime are then deleted, spare slots freed, planned
servers stay in maint. A tunnel to services on other hosts only (reconcile_tunnel) gets the
instances beyond its planned servers the same way, its planned ones left to HAProxy's checks. A
service whose endpoints were never read is left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from meshspec.common.haproxy_shape import server_id
from meshspec.runtime.proxy.runtime_api import ServerState

TARGET = {"passing": "ready", "warning": "drain", "critical": "maint"}


@dataclass(frozen=True)
class Endpoint:
    """One instance as Consul's health API reports it."""

    id: str
    addr: str
    port: int
    status: str  # passing | warning | critical (the worst of its checks)

    @property
    def target(self) -> str:
        return TARGET.get(self.status, "maint")


@dataclass(frozen=True)
class Change:
    kind: str  # assign | address | ready | drain | maint | weight | add | delete
    backend: str
    server: str
    commands: tuple[str, ...]


@dataclass
class Reconciliation:
    changes: list[Change] = field(default_factory=list)
    gone: set[tuple[str, str]] = field(default_factory=set)  # (backend, server) Consul no longer lists


def parse_health(entries: list[dict], mesh: str | None = None) -> list[Endpoint]:
    """`/v1/health/service/<name>` -> endpoints (registrations of another mesh are skipped)."""
    rank = {"passing": 0, "warning": 1, "critical": 2}
    out = []
    for entry in entries:
        service, node = entry.get("Service") or {}, entry.get("Node") or {}
        meta = service.get("Meta") or {}
        if mesh and meta.get("mesh") not in (None, mesh):
            continue
        statuses = [c.get("Status", "critical") for c in entry.get("Checks") or []]
        worst = max(statuses, key=lambda s: rank.get(s, 2), default="passing")
        out.append(Endpoint(service["ID"], service.get("Address") or node.get("Address", ""),
                            int(service["Port"]), worst if worst in rank else "critical"))
    return sorted(out, key=lambda e: e.id)


def replica_of(instance_id: str) -> int | None:
    match = re.search(r"-(\d+)$", instance_id)
    return int(match.group(1)) if match else None


def weight_for(backend: dict, instance_id: str) -> int | None:
    weights = backend.get("replica_weights") or []
    replica = replica_of(instance_id)
    if not weights:
        return None
    return weights[replica] if replica is not None and replica < len(weights) else 1


def _state_commands(ref: str, server: ServerState | None, target: str, moved: bool) -> list[str]:
    if target == "ready":
        if server is not None and server.admin == "ready" and not moved:
            return []
        # Consul says it passes: in rotation now; HAProxy's own checks (and breaker) take it from there.
        return [f"set server {ref} health up", f"set server {ref} state ready"]
    if server is not None and server.admin == target:
        return []
    return [f"set server {ref} state {target}"]


@dataclass(frozen=True)
class Target:
    """Where the proxy sends an endpoint's requests, and the extra `add server` options for that."""

    addr: str
    port: int
    options: str = ""  # TLS to another host's proxy; "" for an instance of this host


def target_of(e: Endpoint, peers: dict | None) -> Target:
    """An instance on this proxy's host (or every one, without `peers`) directly; one on another
    host through that host's proxy's inbound listener, over mTLS, named for it (the shape's `peers`:
    this host's `address`, the inbound `port`, the server `options` and the `name` to fill in)."""
    if not peers or e.addr == peers["address"]:
        return Target(e.addr, e.port)
    name = peers["name"].replace("{id}", e.id)
    return Target(e.addr, peers["port"], peers["options"].replace("{name}", name))


def inbound_entries(endpoints: dict[str, list[Endpoint]], peers: dict | None) -> dict[str, str]:
    """The inbound map: every instance the registry lists at this host's address, by the name the
    other hosts' proxies ask for it under (target_of's), to its port. haproxy.cfg names the planned
    instances itself; these reach the ones beyond the plan (registered by hand, or by a real
    Consul's own), which the other hosts' controllers add to their proxies as they see them."""
    if not peers or not peers.get("map"):
        return {}
    return {peers["name"].replace("{id}", e.id): str(e.port)
            for service in endpoints.values() for e in service if e.addr == peers["address"]}


def reconcile_backend(backend: str, shape: dict, servers: list[ServerState], endpoints: list[Endpoint],
                      expired: set[str] = frozenset(), peers: dict | None = None) -> Reconciliation:
    """What to change in one backend so it serves exactly `endpoints`. `expired`: server names whose
    drain grace is over; `peers`: how instances on other hosts are reached (see target_of). A spare
    slot, which has no TLS, only ever takes an instance of this host."""
    result = Reconciliation()
    to = {e.id: target_of(e, peers) for e in endpoints}
    spares = set(shape.get("spares", []))
    planned = set(shape.get("planned", []))
    by_name = {s.name: s for s in servers}
    claimed: dict[str, str] = {}  # server name -> endpoint id

    def claim(e: Endpoint, name: str) -> None:
        claimed[name] = e.id

    unplaced = []
    for e in endpoints:  # 1. a server named after the instance (planned or added at runtime)
        if e.id in by_name:
            claim(e, e.id)
        else:
            unplaced.append(e)
    still = []
    for e in unplaced:  # 2. a spare slot already holding its address
        slot = next((s.name for s in sorted(servers, key=lambda s: s.id) if s.name in spares and s.name not in claimed
                     and not to[e.id].options and (s.addr, s.port) == (e.addr, e.port)), None)
        if slot:
            claim(e, slot)
        else:
            still.append(e)
    free = [s.name for s in sorted(servers, key=lambda s: s.id)
            if s.name in spares and s.name not in claimed and s.admin == "maint"]
    by_id = {e.id: e for e in endpoints}
    taken_ids = {s.id for s in servers}

    for name, eid in sorted(claimed.items()):
        e, s = by_id[eid], by_name[name]
        ref = f"{backend}/{name}"
        moved = (s.addr, s.port) != (to[eid].addr, to[eid].port)
        cmds = [f"set server {ref} addr {to[eid].addr} port {to[eid].port}"] if moved else []
        cmds += _state_commands(ref, s, e.target, moved)
        weight = weight_for(shape, e.id)
        if weight is not None and weight != s.weight:
            cmds.append(f"set server {ref} weight {weight}")
        if cmds:
            kind = "address" if moved else (e.target if "state" in cmds[0] or "health" in cmds[0] else "weight")
            result.changes.append(Change(kind, backend, name, tuple(cmds)))

    for e in still:  # 3. a free spare slot (an instance of this host), else 4. add server
        weight = weight_for(shape, e.id) or 1
        target = to[e.id]
        if free and not target.options:
            name = free.pop(0)
            ref = f"{backend}/{name}"
            cmds = [f"set server {ref} addr {e.addr} port {e.port}"]
            if by_name[name].weight != weight:
                cmds.append(f"set server {ref} weight {weight}")
            cmds += _state_commands(ref, None, e.target, True)
            result.changes.append(Change("assign", backend, name, tuple(cmds)))
        else:
            result.changes.append(_add_server(backend, e, target, taken_ids, f"weight {weight} {shape['server_options']}"))

    for s in servers:  # servers Consul does not list (any more)
        if s.name in claimed:
            continue
        ref = f"{backend}/{s.name}"
        dynamic = s.name not in spares and s.name not in planned
        if s.admin == "maint":
            if dynamic:
                result.changes.append(Change("delete", backend, s.name, (f"del server {ref}",)))
            continue
        result.gone.add((backend, s.name))
        if s.name in expired:
            result.changes.append(Change("maint", backend, s.name, (f"set server {ref} state maint",)))
        elif s.admin == "ready":
            result.changes.append(Change("drain", backend, s.name, (f"set server {ref} state drain",)))
    return result


def _add_server(backend: str, e: Endpoint, target: Target, taken_ids: set[int], options: str) -> Change:
    """`add server` for an endpoint (its stable ID, the next free one if taken), its checks on."""
    sid = server_id(e.id)
    while sid in taken_ids:
        sid += 1
    taken_ids.add(sid)
    ref = f"{backend}/{e.id}"
    cmds = [f"add server {ref} {target.addr}:{target.port} id {sid} {options}" + (f" {target.options}" if target.options else ""),
            f"enable health {ref}", *_state_commands(ref, None, e.target, True)]
    return Change("add", backend, e.id, tuple(cmds))


def reconcile_tunnel(backend: str, tunnel: dict, servers: list[ServerState], endpoints: list[Endpoint],
                     peers: dict | None) -> Reconciliation:
    """What to change in one tunnel so it also reaches the instances the registry lists beyond its
    planned servers, each by its state there, and no longer those it has stopped listing (maint,
    then deleted). The planned servers are left to HAProxy's checks: a host's controller reads the
    registry through its tunnel, so a tunnel the registry's word took down could not come back."""
    result = Reconciliation()
    planned = set(tunnel["planned"])
    by_name = {s.name: s for s in servers}
    taken_ids = {s.id for s in servers}
    listed = {e.id: e for e in endpoints if e.id not in planned}
    for e in listed.values():
        target = target_of(e, peers)
        server = by_name.get(e.id)
        if server is None:
            result.changes.append(_add_server(backend, e, target, taken_ids, tunnel["server_options"]))
            continue
        ref = f"{backend}/{e.id}"
        moved = (server.addr, server.port) != (target.addr, target.port)
        cmds = [f"set server {ref} addr {target.addr} port {target.port}"] if moved else []
        cmds += _state_commands(ref, server, e.target, moved)
        if cmds:
            result.changes.append(Change("address" if moved else e.target, backend, e.id, tuple(cmds)))
    for s in servers:
        if s.name in planned or s.name in listed:
            continue
        ref = f"{backend}/{s.name}"
        if s.admin == "maint":
            result.changes.append(Change("delete", backend, s.name, (f"del server {ref}",)))
        else:
            result.changes.append(Change("maint", backend, s.name, (f"set server {ref} state maint",)))
    return result


def reconcile(shape: dict, servers: list[ServerState], endpoints: dict[str, list[Endpoint]],
              expired: set[tuple[str, str]] = frozenset()) -> Reconciliation:
    """All backends and tunnels of the shape. A service whose endpoints are unknown (never read from Consul) is left
    alone; a backend HAProxy does not have yet (shape newer than the running config) is skipped."""
    result = Reconciliation()
    present = {s.backend for s in servers}
    for backend, spec in shape["backends"].items():
        service = spec["service"]
        if service not in endpoints or backend not in present:
            continue
        mine = [s for s in servers if s.backend == backend]
        part = reconcile_backend(backend, spec, mine, endpoints[service], {n for b, n in expired if b == backend},
                                 shape.get("peers"))
        result.changes += part.changes
        result.gone |= part.gone
    for backend, tunnel in shape.get("tunnels", {}).items():
        if tunnel["service"] in endpoints and backend in present:
            result.changes += reconcile_tunnel(backend, tunnel, [s for s in servers if s.backend == backend],
                                               endpoints[tunnel["service"]], shape.get("peers")).changes
    return result
