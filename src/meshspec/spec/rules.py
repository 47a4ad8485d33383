"""Rules across fields and services, run on a spec whose fields are each valid.

Each rule yields (path, message) findings; paths point into the YAML document, where
`services` indices are those of the file (`index` maps spec positions back to them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from meshspec.common import nonce
from meshspec.spec.models import RESERVED_META, WILDCARD, MeshSpec, Service
from meshspec.spec.placeholders import (
    CREDENTIALS_NAMES,
    INSTALL_NAMES,
    PEER_CREDENTIALS_FIELDS,
    PROBE_NAMES,
    REGISTRY_NAMES,
    fields_of,
    install_texts,
    probe_texts,
    templated_texts,
    valid_names,
)
from meshspec.spec.resolve import effective_health_timing, effective_routing, path_prefix

MIN_DEREGISTER_MS = 60_000  # Consul's floor for DeregisterCriticalServiceAfter
MAX_HAPROXY_WEIGHT = 256


@dataclass(frozen=True)
class Context:
    spec: MeshSpec
    index: Sequence[int]  # spec.services[i] is services[index[i]] in the file
    declared: frozenset[str]  # every service name in the file, valid or not
    port_offset: int
    # The names placements may use: the inventory's hosts and groups (None: not known here, so
    # placements are not checked; the plan still refuses one that places nowhere).
    inventory: frozenset[str] | None = None

    def services(self) -> Iterator[tuple[tuple, Service]]:
        for i, service in enumerate(self.spec.services):
            yield ("services", self.index[i]), service


def unique_names(ctx: Context):
    seen: set[str] = set()
    for at, s in ctx.services():
        if s.name in seen:
            yield at + ("name",), f"service name {s.name!r} is declared twice"
        seen.add(s.name)


def instance_ports(ctx: Context, service: Service, replica: int) -> Iterator[tuple[str, int]]:
    port_of = ctx.spec.mesh.port_of
    yield "port", port_of(service.port, replica, ctx.port_offset)
    for name, port in service.ports.items():
        yield f"ports.{name}", port_of(port, replica, ctx.port_offset)


def unique_ports(ctx: Context):
    owner: dict[int, str] = {}
    for at, s in ctx.services():
        for r in range(s.replicas):
            for key, port in instance_ports(ctx, s, r):
                who = f"{s.name} replica {r} ({key})"
                where = at + (("replicas",) if r else tuple(key.split(".")))
                if port > 65535:
                    yield where, f"port {port} of {who} is above 65535 (port offset {ctx.port_offset})"
                elif port in owner:
                    yield where, f"port {port} of {who} is already taken by {owner[port]}"
                else:
                    owner[port] = who


def dependencies(ctx: Context):
    for at, s in ctx.services():
        for i, dep in enumerate(s.depends_on):
            if dep == s.name:
                yield at + ("depends_on", i), f"{s.name} depends on itself"
            elif dep not in ctx.declared:
                yield at + ("depends_on", i), f"unknown service {dep!r}; declared: {', '.join(sorted(ctx.declared))}"
            elif s.depends_on.index(dep) != i:
                yield at + ("depends_on", i), f"{dep!r} is listed twice"
    yield from _cycles(ctx)


def _cycles(ctx: Context):
    graph = {s.name: [d for d in s.depends_on if d != s.name] for s in ctx.spec.services}
    where = {s.name: at for at, s in ctx.services()}
    state: dict[str, str] = {}
    reported: set[frozenset[str]] = set()

    def visit(name: str, trail: list[str]):
        state[name] = "open"
        for dep in graph.get(name, []):
            if state.get(dep) == "open":
                cycle = trail[trail.index(dep):] + [dep]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    first = cycle[0]
                    yield where[first] + ("depends_on", graph[first].index(cycle[1])), f"dependency cycle: {' -> '.join(cycle)}"
            elif dep in graph and dep not in state:
                yield from visit(dep, trail + [dep])
        state[name] = "done"

    for name in graph:
        if name not in state:
            yield from visit(name, [name])


def mesh_roles(ctx: Context):
    for key, field in (("consul", "service"), ("proxy", "service"), ("proxy", "controller")):
        role = getattr(getattr(ctx.spec, key), field)
        if role is not None and role not in ctx.declared:
            yield (key, field), f"names no declared service {role!r}"
    yield from _controller_user(ctx)
    stats = ctx.spec.proxy.stats_port_name
    for at, s in ctx.services():
        if s.name == ctx.spec.proxy.service and stats not in s.ports:
            written = "stats_port_name" in ctx.spec.proxy.model_fields_set
            where = ("proxy", "stats_port_name") if written else at + ("ports",)
            yield where, f"service {s.name!r} declares no port {stats!r} under ports (the proxy's stats listener)"


def _controller_user(ctx: Context):
    """HAProxy hands its sockets to the controller's user by name, so where HAProxy runs (the host,
    or its image) that user must exist: the proxy's process names it in system_users."""
    proxy, controller = ctx.spec.proxy.service, ctx.spec.proxy.controller
    services = {s.name: (at, s) for at, s in ctx.services()}
    if proxy not in services or controller not in services:
        return
    user = services[controller][1].process.user if services[controller][1].process else None
    at, service = services[proxy]
    if user and service.process and user not in service.process.system_users:
        yield at + ("process", "system_users"), (f"must list {user!r}, the user of the proxy's controller "
                                                 f"{controller!r}: HAProxy gives it its sockets")


def run_method(ctx: Context):
    for at, s in ctx.services():
        if s.process is None and s.container is None:
            yield at, "no run method: give process (command, install) and/or container (image or build)"
        elif s.process is None and s.container.image is None and s.container.build is None:
            yield at + ("container",), "container needs image or build when the service has no process to build from"


def placeholders(ctx: Context):
    for at, s in ctx.services():
        texts = [(path, text, valid_names(ctx.spec, s)) for path, text in templated_texts(s)]
        texts += [(path, text, valid_names(ctx.spec, s) | set(PROBE_NAMES)) for path, text in probe_texts(s)]
        texts += [(path, text, set(INSTALL_NAMES)) for path, text in install_texts(s)]
        for path, text, valid in texts:
            try:
                used = fields_of(text)
            except ValueError as err:
                yield at + path, str(err)
                continue
            for name in used:
                if name in valid:
                    continue
                hint = ""
                if name.startswith("services.") and name.split(".")[1] not in s.depends_on:
                    hint = f" (add {name.split('.')[1]!r} to depends_on to use it)"
                elif name in CREDENTIALS_NAMES:
                    hint = " (only a service with `credentials` has it)"
                elif name.startswith("services.") and name.split(".")[-1] in PEER_CREDENTIALS_FIELDS:
                    hint = f" (only a service with `credentials` has it: give them to {name.split('.')[1]!r})"
                elif name in REGISTRY_NAMES:
                    hint = (f" (only the registry, {ctx.spec.consul.service!r}, holds the management token and"
                            " the mesh CA; a service reads its own token, {consul.token_file})")
                yield at + path, f"unknown placeholder {{{name}}}{hint}; valid: {', '.join(sorted(valid))}"


def meta_keys(ctx: Context):
    for at, s in ctx.services():
        for key in s.meta:
            if key.startswith("consul-") or key in RESERVED_META:
                yield at + ("meta", key), f"meta key {key!r} is reserved (consul-*, {', '.join(RESERVED_META)})"


def health_policy(ctx: Context):
    for at, s in ctx.services():
        timing = effective_health_timing(ctx.spec, s)
        if timing.timeout > timing.interval:
            yield at + ("health", "timeout"), "timeout is longer than interval: probes would overlap"
        if timing.deregister_critical_after is not None and timing.deregister_critical_after < MIN_DEREGISTER_MS:
            yield at + ("health", "deregister_critical_after"), "must be at least 1m (Consul's minimum)"
        if s.kind == "mcp" and s.health.probe != "mcp":
            yield at + ("health", s.health.probe), "an mcp service's health is an MCP handshake: use health.mcp"
        yield from _round_trip(s, at + ("health", "http"))
        yield from _probe_port(ctx, s, at + ("health", "http", "port"))


def _round_trip(s: Service, here: tuple):
    """A `{nonce}` the probe expects must be one a `before` step sends, or the probe never passes."""
    probe = s.health.http
    if probe is None or nonce.MARK not in (probe.contains or ""):
        return
    sent = [text for path, text in probe_texts(s) if "before" in path]
    if not any(nonce.MARK in text for text in sent):
        yield here + ("contains",), (f"contains expects {nonce.MARK}, which no `before` step sends: the probe could "
                                     "never pass (store an object carrying it in a before step)")


def _probe_port(ctx: Context, s: Service, here: tuple):
    """A probe on a port of its own names one the service declares, of a service the proxy does not
    route: the proxy's check and verify's route check reach a routed service on its main port."""
    port = s.health.http.port if s.health.http else None
    if port is None:
        return
    if port not in s.ports:
        yield here, _no_such_port(s, port)
    elif effective_routing(ctx.spec, s).enabled:
        yield here, ("a routed service is probed on its main port (the proxy checks and routes there): "
                     "remove port, or set routing.enabled: false")


def routing_policy(ctx: Context):
    prefixes: dict[str, str] = {}
    for at, s in ctx.services():
        r = effective_routing(ctx.spec, s)
        here = at + ("routing",)
        if not r.enabled:
            continue
        if s.kind == "database" and r.mode != "tcp":
            yield here + ("mode",), "a database is routed as tcp (set routing.mode: tcp or routing.enabled: false)"
        if s.kind == "mcp" and r.mode != "http":
            yield here + ("mode",), "an mcp service speaks HTTP (Streamable HTTP): routing.mode must be http"
        if r.affinity == "mcp_session" and s.health.probe != "mcp":
            yield here + ("affinity",), "mcp_session affinity needs a service that speaks MCP (health.mcp)"
        yield from _lb_policy(s, r, here)
        if r.mode == "tcp":
            yield from _tcp_limits(r, here)
        else:
            prefix = path_prefix(s, r)
            if prefix in prefixes:
                yield here + ("path_prefix",), f"path prefix {prefix} is already routed to {prefixes[prefix]}"
            prefixes[prefix] = s.name
        if r.retries.attempts and not r.retries.retry_on:
            yield here + ("retries", "retry_on"), "retries.attempts > 0 needs at least one retry_on condition"


def _lb_policy(s: Service, r, here: tuple):
    lb = r.lb
    if lb.policy == "hash" and lb.hash_on is None:
        yield here + ("lb",), "policy hash needs hash_on (header, cookie or source)"
    if lb.policy != "hash" and lb.hash_on is not None:
        yield here + ("lb", "hash_on"), f"hash_on applies only to policy hash, not {lb.policy}"
    if lb.policy == "weighted":
        if lb.weights is None or len(lb.weights) != s.replicas:
            yield here + ("lb",), f"policy weighted needs weights: one per replica ({s.replicas})"
        elif any(not 1 <= w <= MAX_HAPROXY_WEIGHT for w in lb.weights):
            yield here + ("lb", "weights"), f"weights must be between 1 and {MAX_HAPROXY_WEIGHT}"
    elif lb.weights is not None:
        yield here + ("lb", "weights"), f"weights apply only to policy weighted, not {lb.policy}"


def _tcp_limits(r, here: tuple):
    if r.path_prefix is not None:
        yield here + ("path_prefix",), "a tcp service has no paths: remove path_prefix"
    if r.lb.hash_on and r.lb.hash_on.source is None:
        yield here + ("lb", "hash_on"), "a tcp service can only hash on source"
    if r.affinity == "mcp_session":
        yield here + ("affinity",), "a tcp service has no MCP sessions"
    if [c for c in r.retries.retry_on if c != "conn-failure"]:
        yield here + ("retries", "retry_on"), "a tcp service can only retry on conn-failure (set routing.retries.retry_on: [conn-failure])"


def _no_such_port(s: Service, name: str) -> str:
    return f"no port named {name!r} under ports ({', '.join(s.ports) or 'none'})"


def metrics_port(ctx: Context):
    for at, s in ctx.services():
        if s.metrics and s.metrics.port is not None and s.metrics.port not in s.ports:
            yield at + ("metrics", "port"), _no_such_port(s, s.metrics.port)


def intentions(ctx: Context):
    seen: set[tuple[str, str, str | None]] = set()
    consumers = {c.name for c in ctx.spec.consumers}
    for i, intention in enumerate(ctx.spec.intentions):
        tool = intention.tool
        sources = ctx.declared | consumers
        if intention.source != WILDCARD and intention.source not in sources:
            yield ("intentions", i, "source"), (f"unknown service or consumer {intention.source!r}; declared: "
                                                f"{', '.join(sorted(sources))}, or *")
        destination = intention.destination
        if destination != WILDCARD and destination not in ctx.declared:
            yield ("intentions", i, "destination"), (f"unknown service {destination!r}; declared: "
                                                     f"{', '.join(sorted(ctx.declared))}, or *")
        elif tool and destination not in (mcp := sorted(s.name for s in ctx.spec.services if s.kind == "mcp")):
            yield ("intentions", i, "destination"), (f"a tool intention names one MCP server; {destination!r} is "
                                                     f"none (kind mcp: {', '.join(mcp) or 'none declared'})")
        elif tool and not _proxied(ctx, destination):
            yield ("intentions", i, "tool"), (f"the proxy enforces tool intentions, and it does not carry {destination} "
                                              "(a spec proxy, and the service's routing enabled in mode http)")
        key = (intention.source, destination, tool)
        if key in seen:
            what = f"{key[0]} -> {key[1]}" + (f" tool {tool}" if tool else "")
            yield ("intentions", i), f"{what} is stated twice (one intention per source, destination and tool)"
        seen.add(key)


def tool_rate_limits(ctx: Context):
    if ctx.spec.defaults.routing.tool_rate_limits:
        yield ("defaults", "routing", "tool_rate_limits"), "tool rate limits belong to an MCP server's routing, not to every service's"
    for at, s in ctx.services():
        if s.routing.tool_rate_limits and s.kind != "mcp":
            yield at + ("routing", "tool_rate_limits"), f"only an MCP server has tools; {s.name} is kind {s.kind}"


def _proxied(ctx: Context, name: str) -> bool:
    routing = effective_routing(ctx.spec, next(s for s in ctx.spec.services if s.name == name))
    return ctx.spec.proxy.service is not None and routing.enabled and routing.mode == "http"


def consumers(ctx: Context):
    names = [c.name for c in ctx.spec.consumers]
    for i, name in enumerate(names):
        if names.index(name) != i:
            yield ("consumers", i, "name"), f"consumer {name!r} is declared twice"
        elif name in ctx.declared:
            yield ("consumers", i, "name"), f"{name!r} is the name of a service: an intention's source would name both"
    for i, consumer in enumerate(ctx.spec.consumers):
        holder = next((s for s in ctx.spec.services if s.name == consumer.held_by), None)
        if consumer.held_by is not None and (holder is None or holder.process is None):
            yield ("consumers", i, "held_by"), (f"{consumer.held_by!r} is no service with a process (whose user "
                                                f"would read the key); declared: {', '.join(sorted(ctx.declared))}")
    operator = ctx.spec.proxy.operator
    if names and operator is not None and operator not in names:
        yield ("proxy", "operator"), (f"{operator!r} is no consumer; declared: {', '.join(sorted(set(names)))} "
                                      "(meshspec's own tools present its key at the edge), or null")


def placement(ctx: Context):
    for where, service in ctx.services():
        if service.placement.per_host and service.replicas != 1:
            yield (*where, "replicas"), (f"{service.replicas} with placement per_host, which runs one instance on each "
                                         "host it selects: leave replicas at 1")
    if ctx.inventory is None:
        return
    for where, service in ctx.services():
        for i, name in enumerate(service.placement.hosts):
            if name not in ctx.inventory:
                yield (*where, "placement", "hosts", i), (f"{name!r} names no host or group of the inventory; it "
                                                          f"has: {', '.join(sorted(ctx.inventory))}")


def tracing(ctx: Context):
    store = ctx.spec.tracing.store
    if store is not None and store not in ctx.declared:
        yield ("tracing", "store"), f"names no declared service {store!r}; declared: {', '.join(sorted(ctx.declared))}"


RULES = (metrics_port, unique_names, unique_ports, dependencies, mesh_roles, run_method, placeholders, meta_keys, health_policy,
         routing_policy, intentions, consumers, tool_rate_limits, tracing, placement)


def check(ctx: Context) -> list[tuple[tuple, str]]:
    return [finding for rule in RULES for finding in rule(ctx)]
