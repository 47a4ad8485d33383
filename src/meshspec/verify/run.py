"""Verify a mesh: every check of every instance of the plan, and of the mesh as a whole, in parallel.

Per instance: its program runs, its port listens, it does its job (the same probe as its Consul
check), it is registered exactly as the deploy registers it (spec-hash included), its Consul
check passes. Per routed service: it is reachable through the mesh proxy. Per mesh: nothing is
registered or supervised that the plan does not declare, and the counts agree.

Shared reads (supervisord's program states, Consul's services and checks) happen once, at the
start, in parallel with the checks that need no shared read. Results are plain data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone

import consul

from meshspec.common import nonce
from meshspec.common.connect_certs import service_uri
from meshspec.common.consul_token import TOKEN_ENV, token_in
from meshspec.converge.mesh import Mesh
from meshspec.plan import Instance, Plan, Runtime
from meshspec.plan.hosts import Host
from meshspec.plan.layout import OWNED
from meshspec.render.checker import CHECKER
from meshspec.render.containers import ownership
from meshspec.render.probes import TCP, Probe, probe
from meshspec.render.registrations import is_ours, registration
from meshspec.runtime.probes.owner import Owner, Tracker
from meshspec.runtime.probes.protocols import Result
from meshspec.runtime.probes.protocols import run as run_probe
from meshspec.spec.resolve import effective_health_timing, effective_routing, path_prefix
from meshspec.verify.checks import (
    Check,
    MtlsListener,
    Port,
    Program,
    Registration,
    Registrations,
    Route,
    Supervisor,
    one_line,
    processes_in_containers,
)
from meshspec.verify.remote import HostReader, forwarded, forwards

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
MESH = "mesh"  # the subject of mesh-wide checks
MAX_WORKERS = 64
FIRST = {"routable": 0, "healthy": 1}  # the order checks start in; the others read what the sources hold

#: The checks of one instance, in the order they are shown: (check, title).
INSTANCE_CHECKS = {
    "running": "program running",
    "listening": "port listening",
    "healthy": "does its job (health probe)",
    "registered": "registered as declared",
    "passing": "Consul check passing",
}
SERVICE_CHECKS = {"routable": "reachable through the proxy"}
MESH_CHECKS = {
    "mtls": "service-facing listener admits the mesh alone",
    "no-extra-registrations": "no undeclared registration",
    "no-extra-programs": "no undeclared program",
    "counts": "counts agree",
}
TITLES = INSTANCE_CHECKS | SERVICE_CHECKS | MESH_CHECKS


@dataclass(frozen=True)
class Outcome:
    status: str
    reason: str
    detail: dict = field(default_factory=dict)


def outcome(ok: bool, reason: str, **detail) -> Outcome:
    return Outcome(PASSED if ok else FAILED, one_line(reason, 400), detail)


def skipped(reason: str) -> Outcome:
    return Outcome(SKIPPED, reason)


def verdict_of(statuses: list[str]) -> str:
    """FAILING when a check failed; INCOMPLETE when none failed but some did not run; PASSING only
    when every check ran and passed (and there was one)."""
    if FAILED in statuses:
        return "FAILING"
    return "PASSING" if statuses and all(s == PASSED for s in statuses) else "INCOMPLETE"


@dataclass(frozen=True)
class CheckResult:
    """One check, as measured: plain data (JSON, JUnit, the report)."""

    id: str  # "<subject>/<check>"
    subject: str  # an instance ID, a service name, or "mesh"
    service: str | None
    check: str
    title: str
    status: str  # passed | failed | skipped
    reason: str  # one line
    started_at: str  # ISO 8601, UTC
    duration_ms: float
    detail: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def line(self) -> str:
        """One line per failure: ``files: 127.0.0.1:PORT answers HTTP 404 but not MCP initialize``."""
        return f"{self.service or self.subject}: {self.reason}"


@dataclass(frozen=True)
class VerifyRun:
    mesh: str
    spec: str
    port_offset: int
    state_dir: str
    consul: str
    started_at: str
    finished_at: str
    duration_ms: float
    checks: list[CheckResult]
    sources: dict[str, dict] = field(default_factory=dict)  # the shared reads: {name: {duration_ms, error}}

    @property
    def ok(self) -> bool:
        """Every check ran and passed: a skipped check is not a passed one."""
        return all(c.status == PASSED for c in self.checks)

    @property
    def verdict(self) -> str:
        return verdict_of([c.status for c in self.checks])

    @property
    def skips(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == SKIPPED]

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed]

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checks)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"], data["verdict"] = self.ok, self.verdict
        data["summary"] = {"checks": len(self.checks), **{s: self.count(s) for s in (PASSED, FAILED, SKIPPED)}}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> VerifyRun:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["checks"] = [CheckResult(**c) for c in data["checks"]]
        return cls(**fields)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --- shared reads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """One shared read: its data, or why it failed."""

    data: object
    error: str | None
    duration_ms: float


def _timed(fn: Callable[[], object], what: str) -> Read:
    started = time.perf_counter()
    try:
        data, error = fn(), None
    except Exception as err:  # a registry that does not answer is a finding, not a crash
        data, error = None, f"{what} does not answer: {one_line(err) or type(err).__name__}"
    return Read(data, error, round((time.perf_counter() - started) * 1000, 2))


def mesh_token(plan: Plan) -> str | None:
    """The management token, read on the registry's host (over SSH when it is another); else
    CONSUL_HTTP_TOKEN; None before the first deploy has made it."""
    try:
        text = HostReader(plan.registry_host).read_text(plan.layout.consul_token_file)
    except FileNotFoundError:
        text = ""
    return token_in(text) or os.environ.get(TOKEN_ENV) or None


def registry_client(mesh: Mesh, token: str | None, timeout: float) -> consul.Consul:
    """The registry as its host reaches it: through an SSH forward when that host is another, so
    the management token does not cross the network in the clear (with a real Consul, the
    inventory's first host's agent at CONSUL_HTTP_ADDR, as that host reaches it)."""
    host = mesh.plan.registry_host
    if host.is_local:
        return mesh.registry.client(token, timeout)
    address, port = forwarded(host, mesh.registry.host, mesh.registry.port)
    return replace(mesh.registry, host=address, port=port).client(token, timeout)


@dataclass
class Sources:
    supervisors: dict[str, Future]  # host name -> Read of a Supervisor (which carries its own error)
    services: Future  # -> Read of {id: service}
    checks: Future  # -> Read of {check id: check}
    edge: Future  # -> Read of the headers meshspec's tools send at the proxy's edge
    probes: dict[str, Future] = field(default_factory=dict)  # another host's name -> Read of {id: Result} there
    runtime: Runtime = Runtime.PROCESS

    def reads(self, host: Host) -> bool:
        """Whether verify reads what runs the host's instances: supervisord on any host (over SSH on
        another), the Docker engine only on this one."""
        return host.is_local or not self.runtime.in_containers

    def supervisor_read(self, host: Host) -> Supervisor:
        return self.supervisors[host.name].result().data

    def consul(self, which: str) -> tuple[dict, str | None]:
        read: Read = getattr(self, which).result()
        return (read.data or {}), read.error


def _start_sources(pool: ThreadPoolExecutor, mesh: Mesh, timeout: float, runtime: Runtime) -> Sources:
    where = f"Consul at {mesh.registry.addr}"
    token = pool.submit(mesh_token, mesh.plan)  # first in the pool's queue: the reads below wait on it
    socket = str(mesh.plan.layout.supervisor_socket)
    hosts = {i.host.name: i.host for i in mesh.plan.instances}
    if runtime.in_containers:
        runners = {name: pool.submit(_timed, lambda: Supervisor.read_containers(ownership(mesh.plan), timeout), "docker")
                   for name, host in hosts.items() if host.is_local}
    else:
        runners = {name: pool.submit(_timed, lambda h=host: HostReader(h).supervisor(mesh.plan.meshspec_bin, socket, timeout),
                                     f"supervisord on {name}") for name, host in hosts.items()}
    return Sources(
        supervisors=runners,
        services=pool.submit(_timed, lambda: registry_client(mesh, token.result(), timeout).agent.services(), where),
        checks=pool.submit(_timed, lambda: registry_client(mesh, token.result(), timeout).agent.checks(), where),
        edge=pool.submit(_timed, lambda: edge_headers(mesh.plan), "its file"),
        probes={name: pool.submit(_timed, lambda h=host: _probes_on(mesh.plan, h, runtime), f"probes on {name}")
                for name, host in hosts.items() if not host.is_local},
        runtime=runtime,
    )


#: Among another host's probes, the key of an instance's `listening` connect: its ID and this.
LISTENING = " listening"


def connect_timeout(plan: Plan, inst: Instance) -> float:
    """Seconds the `listening` check waits for its connect: the service's probe timeout, at most 2 s."""
    return min(effective_health_timing(plan.spec, plan.service(inst.service)).timeout / 1000, 2.0)


def _probes_on(plan: Plan, host: Host, runtime: Runtime) -> dict:
    """The probes of another host's instances, and a connect to each one's port, run there at once
    (verify.remote): no connection of verify's crosses between machines but its SSH."""
    wanted = {}
    for i in plan.instances_on(host.name):
        wanted[i.id] = (asdict(probe(plan, i, runtime)), effective_health_timing(plan.spec, plan.service(i.service)).timeout
                        / 1000)
        wanted[i.id + LISTENING] = (_connect(i), connect_timeout(plan, i))
    return HostReader(host).probes(plan.meshspec_bin, wanted)


def _connect(inst: Instance) -> dict:
    """A connect to the instance's port, as a probe that its host runs (`meshspec probe run`)."""
    return asdict(Probe(TCP, address=inst.address, port=inst.port))


def _on_its_host(sources: Sources, inst: Instance, key: str, **details) -> Outcome:
    """What one of the probes run on another host's instance's host (`_probes_on`) found."""
    read: Read = sources.probes[inst.host.name].result()
    result = read.data[key] if not read.error else None
    return outcome(False, read.error) if result is None else outcome(result.ok, result.output, **details, **result.details)


# --- the checks --------------------------------------------------------------------------------


def program_running(sources: Sources, inst: Instance) -> Outcome:
    if not sources.reads(inst.host):
        return skipped(f"{inst.host.name} is not this host: its Docker engine is not read from here")
    program = Program(sources.supervisor_read(inst.host), inst.id)
    return outcome(program.is_running, program.reason, state=program.state, pid=program.pid)


def port_listening(sources: Sources, plan: Plan, inst: Instance) -> Outcome:
    """A connect to the instance's port, from its own host (pytest-testinfra's `socket` check reads
    the host too): another host's is run there, with its probes."""
    if not inst.host.is_local:
        return _on_its_host(sources, inst, inst.id + LISTENING, port=inst.port)
    port = Port(inst.address, inst.port, connect_timeout(plan, inst))
    return outcome(port.is_listening, port.reason, port=inst.port)


def healthy(sources: Sources, plan: Plan, inst: Instance, runtime: Runtime = Runtime.PROCESS) -> Outcome:
    """The instance's probe (render.probes), run here once by the code the host's checker runs
    every interval (runtime.probes.protocols)."""
    service = plan.service(inst.service)
    timeout = effective_health_timing(plan.spec, service).timeout / 1000
    found = probe(plan, inst, runtime)
    if not inst.host.is_local:  # run on its host, as its checker runs it: its secrets and /proc are there
        return _on_its_host(sources, inst, inst.id, probe=found.kind)
    tracker = None
    if found.owner:  # the pid supervisord (or the engine) gave for the whole mesh in one read
        tracker = Tracker(Owner(**found.owner), root=Program(sources.supervisor_read(inst.host), inst.id).pid)
    result = run_probe(asdict(found), timeout, tracker)
    return outcome(result.ok, result.output, probe=found.kind, **result.details)


def registered(sources: Sources, expected: dict) -> Outcome:
    services, error = sources.consul("services")
    checks, checks_error = sources.consul("checks")
    if error or checks_error:
        return outcome(False, error or checks_error)
    reg = Registration(services, expected, checks)
    return outcome(reg.matches, reg.reason, spec_hash=expected["Meta"]["spec-hash"],
                   registered_port=(reg.registered or {}).get("Port"), declared_port=expected["Port"])


def check_passing(sources: Sources, inst: Instance) -> Outcome:
    checks, error = sources.consul("checks")
    if error:
        return outcome(False, error)
    check = Check(checks, f"service:{inst.id}")
    return outcome(check.is_passing, check.reason, consul_status=check.status)


def not_routed(plan: Plan, service_name: str) -> str | None:
    """Why the spec routes no traffic to the service through the proxy; None when it does. Such a
    service has no `routable` check at all: a check that cannot apply is not a skipped one."""
    proxy = plan.spec.proxy.service
    routing = effective_routing(plan.spec, plan.service(service_name))
    if proxy is None:
        return "the spec declares no proxy service"
    if service_name == proxy:
        return "the proxy itself"
    if not routing.enabled:
        return "routing disabled in the spec"
    if routing.mode != "http":
        return f"routing mode {routing.mode}: reached directly, not through the proxy"
    return None


def edge_headers(plan: Plan) -> dict[str, str]:
    """What meshspec's own tools send at the proxy's edge: the operator consumer's API key, where the
    spec declares consumers (from its 0600 file on the proxy's host; the operator runs them as
    root); nothing otherwise."""
    operator = plan.spec.proxy.operator
    if not plan.spec.consumers or operator is None:
        return {}
    proxy = plan.instances_of(plan.spec.proxy.service)[0].host
    return {"X-API-Key": HostReader(proxy).read_text(plan.layout.consumer_key_file(operator)).strip()}


def routable(sources: Sources, plan: Plan, service_name: str) -> Outcome:
    """The service answers through every host's proxy (each reaches the instances of other hosts
    through their proxies): the first's answer is the outcome's, a failing one's fails it."""
    service = plan.service(service_name)
    timeout = effective_health_timing(plan.spec, service).timeout / 1000
    edge: Read = sources.edge.result()
    if edge.error:
        return outcome(False, f"the operator's API key for the proxy's edge: {edge.error}")
    fronts = plan.instances_of(plan.spec.proxy.service)
    try:
        routes = [_route(plan, service_name, front, edge.data, timeout) for front in fronts]
    except OSError as err:  # no SSH forward to a proxy's edge
        return outcome(False, f"the proxy's edge: {one_line(err)}")
    failed = next(((front, r) for front, r in zip(fronts, routes) if not r.reaches), None)
    first = routes[0]
    through = {"server": first.server_name} if first.mcp else {"http_status": first.http_status}
    if failed:
        front, route = failed
        return outcome(False, route.reason + (f" (through {front.host.name}'s proxy)" if len(fronts) > 1 else ""),
                       url=route.shown_url)
    also = f"; the same through the proxies of {', '.join(f.host.name for f in fronts[1:])}" if len(fronts) > 1 else ""
    return outcome(True, first.reason + also, url=first.shown_url, **through)


def _route(plan: Plan, service_name: str, front: Instance, headers: dict[str, str], timeout: float) -> Route:
    """The service through the proxy `front`: on another host, over an SSH forward (the operator's
    key stays inside SSH), asking for the proxy's own address as its Host."""
    own = f"{front.address}:{front.port}"
    url, kwargs = f"http://{own}", {"timeout": timeout, "headers": headers}
    if not front.host.is_local:
        address, port = forwarded(front.host, front.address, front.port)
        url = f"http://{address}:{port}"
        kwargs |= {"headers": {**headers, "Host": own}, "shown": f"http://{own}"}
    service = plan.service(service_name)
    routing, health = effective_routing(plan.spec, service), service.health
    if health.mcp:
        return Route(url, service_name, mcp=True, **kwargs)
    path = "/"
    if health.http:
        path = plan.render_once(service_name, health.http.first_page.path, **{nonce.NAME: nonce.fresh()})
    return Route(url, service_name, path, prefix=path_prefix(service, routing), **kwargs)


def same_server(results: list[CheckResult]) -> list[CheckResult]:
    """An MCP route passes only when the server that answered through the proxy is the one the
    service's instances are: each `routable` of an MCP service against the names its instances'
    `healthy` probes heard directly (a proxy that sends /mcp/github to the files server fails here)."""
    heard: dict[str, set[str]] = {}
    for r in results:
        if r.check == "healthy" and r.status == PASSED and r.detail.get("server"):
            heard.setdefault(r.service, set()).add(r.detail["server"])
    out = []
    for r in results:
        routed = r.detail.get("server") if r.check == "routable" and r.status == PASSED else None
        own = heard.get(r.service, set())
        if routed and routed not in own:
            why = (f"answered by {routed!r}, but {r.service}'s instances answer as {', '.join(map(repr, sorted(own)))}"
                   if own else f"answered by {routed!r}; no instance of {r.service} answered directly to compare with")
            r = replace(r, status=FAILED, reason=one_line(f"{r.reason}: {why}", 400))
        out.append(r)
    return out


def no_extra_registrations(sources: Sources, plan: Plan) -> Outcome:
    services, error = sources.consul("services")
    if error:
        return outcome(False, error)
    regs = Registrations(services, [i.id for i in plan.instances])
    return outcome(regs.has_no_unexpected, regs.reason, registrations=len(services), unexpected=regs.unexpected)


def no_extra_programs(sources: Sources, plan: Plan) -> Outcome:
    hosts = {i.host.name: i.host for i in plan.instances if sources.reads(i.host)}
    if not hosts:
        return skipped("no instance on this host")
    found, extra, errors, kind = 0, [], [], "program"
    for name, host in hosts.items():
        supervisor = sources.supervisor_read(host)
        if supervisor.error:
            errors.append(supervisor.error)
            continue
        # The host's checker is declared by the plan, not the spec; that it runs shows in every
        # `passing` check: a TTL check passes only while the checker renews it.
        declared = {i.id for i in plan.instances_on(name)} | {CHECKER}
        found, kind = found + len(supervisor.states), supervisor.kind
        extra += sorted(f"{p} on {name}" if len(hosts) > 1 else p for p in set(supervisor.states) - declared)
    if errors:
        return outcome(False, "; ".join(errors))
    on = f" on {len(hosts)} hosts" if len(hosts) > 1 else ""
    reason = (f"{found} {kind}s{on}, all declared" if not extra
              else f"undeclared {kind}{'s' if len(extra) > 1 else ''} of this mesh: {', '.join(extra)}")
    return outcome(not extra, reason, programs=found, unexpected=extra)


VERIFY_IDENTITY = "meshspec-verify"  # the service verify's certificate names (no service of a mesh is so named)


def mtls(mesh: Mesh, timeout: float) -> Outcome:
    """The proxy's mTLS listener, as a caller of the mesh reaches it (a certificate the registry's
    Connect CA issued) and as a stranger does (none): the first is answered by the proxy, whose
    certificate chains to the registry's roots and names the proxy; the second is refused."""
    plan = mesh.plan
    proxy = plan.instances_of(plan.spec.proxy.service)[0]
    try:
        ca = registry_client(mesh, mesh_token(plan), timeout).agent.connect.ca
        roots, leaf = ca.roots(), ca.leaf(VERIFY_IDENTITY)
    except Exception as err:  # a registry that does not answer is a finding, not a crash
        return outcome(False, f"the registry's Connect CA does not answer: {one_line(err) or type(err).__name__}")
    listener = MtlsListener(proxy.address, proxy.ports[plan.spec.proxy.mtls_port_name],
                            "".join(r["RootCert"] for r in roots["Roots"]), (leaf["CertPEM"], leaf["PrivateKeyPEM"]),
                            timeout=timeout)
    expected = (service_uri(roots["TrustDomain"], plan.spec.consul.datacenter, proxy.service),)
    named = listener.with_certificate.server_uris == expected
    reason = listener.reason + ("" if named or not listener.with_certificate.server_uris
                                else f"; the proxy's certificate should name {expected[0]}")
    return outcome(listener.admits_the_mesh and listener.refuses_strangers and named, reason)


def counts(sources: Sources, plan: Plan) -> Outcome:
    """Planned = running = registered = passing, each counted over the plan's instances."""
    ids = [i.id for i in plan.instances]
    read = [i for i in plan.instances if sources.reads(i.host)]
    local = [i.id for i in read]
    services, s_error = sources.consul("services")
    checks, c_error = sources.consul("checks")
    running = sum(Program(sources.supervisor_read(i.host), i.id).is_running for i in read)
    registered_n = sum(i in services for i in ids)
    passing = sum(Check(checks, f"service:{i}").is_passing for i in ids)
    numbers = {"planned": len(ids), "running": running, "registered": registered_n, "passing": passing}
    ok = running == len(local) and registered_n == passing == len(ids) and not (s_error or c_error)
    running_text = f"{running} running" + (f" (of {len(local)} on this host)" if len(local) != len(ids) else "")
    reason = f"{len(ids)} planned, {running_text}, {registered_n} registered, {passing} passing"
    supervisors = [sources.supervisor_read(h) for h in {i.host: None for i in read}]
    errors = [e for e in (*(s.error for s in supervisors), s_error, c_error) if e]
    return outcome(ok, "; ".join([reason, *dict.fromkeys(errors)]), **numbers, on_this_host=len(local))


# --- running them ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    subject: str
    service: str | None
    check: str
    run: Callable[[], Outcome]


def planned_checks(mesh: Mesh, sources: Sources, runtime: Runtime) -> list[Planned]:
    plan = mesh.plan
    out: list[Planned] = []
    for inst in plan.instances:
        expected = registration(plan, inst, runtime)
        out += [
            Planned(inst.id, inst.service, "running", lambda i=inst: program_running(sources, i)),
            Planned(inst.id, inst.service, "listening", lambda i=inst: port_listening(sources, plan, i)),
            Planned(inst.id, inst.service, "healthy", lambda i=inst: healthy(sources, plan, i, runtime)),
            Planned(inst.id, inst.service, "registered", lambda e=expected: registered(sources, e)),
            Planned(inst.id, inst.service, "passing", lambda i=inst: check_passing(sources, i)),
        ]
    for service in plan.spec.services:
        if plan.instances_of(service.name) and not_routed(plan, service.name) is None:
            out.append(Planned(service.name, service.name, "routable", lambda n=service.name: routable(sources, plan, n)))
    proxy = plan.spec.proxy.service
    if proxy and plan.instances_of(proxy) and plan.spec.proxy.mtls_port_name in plan.instances_of(proxy)[0].ports:
        out.append(Planned(MESH, None, "mtls", lambda: mtls(mesh, 2.0)))
    out += [
        Planned(MESH, None, "no-extra-registrations", lambda: no_extra_registrations(sources, plan)),
        Planned(MESH, None, "no-extra-programs", lambda: no_extra_programs(sources, plan)),
        Planned(MESH, None, "counts", lambda: counts(sources, plan)),
    ]
    return out


def _measure(p: Planned) -> CheckResult:
    started_at, started = now_iso(), time.perf_counter()
    try:
        result = p.run()
    except Exception as err:  # a check that crashes fails, it does not stop the others
        result = Outcome(FAILED, one_line(f"check crashed: {type(err).__name__}: {err}", 400))
    return CheckResult(
        id=f"{p.subject}/{p.check}", subject=p.subject, service=p.service, check=p.check, title=TITLES[p.check],
        status=result.status, reason=result.reason, started_at=started_at,
        duration_ms=round((time.perf_counter() - started) * 1000, 2), detail=result.detail,
    )


def verify(mesh: Mesh, runtime: Runtime = Runtime.PROCESS, spec_path: str = "", read_timeout: float = 2.0,
           workers: int = MAX_WORKERS) -> VerifyRun:
    """Run every check of `mesh` in parallel; never raises for what it finds."""
    started_at, started = now_iso(), time.perf_counter()
    plan, runtime = mesh.plan, Runtime(runtime)
    with forwards(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        # Submitted first, so they run before any check that waits on them (the queue is FIFO).
        sources = _start_sources(pool, mesh, read_timeout, runtime)
        planned = planned_checks(mesh, sources, runtime)
        # The longest checks start first (a whole exchange through the proxy, then each probe), so
        # the run is not as long as the last one to start plus its own length; results keep the plan's order.
        started_checks = {id(p): pool.submit(_measure, p) for p in sorted(planned, key=lambda p: FIRST.get(p.check, len(FIRST)))}
        results = same_server([started_checks[id(p)].result() for p in planned])
        kind = "docker" if runtime.in_containers else "supervisord"
        reads = {kind if len(sources.supervisors) == 1 else f"{kind} on {host}": read.result()
                 for host, read in sources.supervisors.items()}
        reads |= {"consul services": sources.services.result(), "consul checks": sources.checks.result()}
    timing = {name: {"duration_ms": read.duration_ms, "error": read.error or getattr(read.data, "error", None)}
              for name, read in reads.items()}
    return VerifyRun(
        mesh=plan.spec.mesh.name, spec=spec_path, port_offset=plan.port_offset, state_dir=str(plan.layout.root),
        consul=mesh.registry.addr, started_at=started_at, finished_at=now_iso(),
        duration_ms=round((time.perf_counter() - started) * 1000, 2), checks=results, sources=timing,
    )


# --- after a teardown ----------------------------------------------------------------------------

GONE_CHECKS = {
    "port-free": "nothing listens on its port",
    "no-registrations": "no registration of this mesh",
    "no-programs": "no supervisord of this mesh",
    "no-containers": "no container of this mesh",
    "no-state": "no state directory left",
}
TITLES |= GONE_CHECKS


def port_free(inst: Instance, timeout: float, on_its_host: Future | None = None) -> Outcome:
    """Nothing accepts a connect to the instance's port: from its own host, where another host's
    connect runs with the others of that host (`_connects_on`), as `port_listening`'s."""
    if on_its_host is None:
        port = Port(inst.address, inst.port, timeout)
        return outcome(not port.is_listening, port.reason, port=inst.port)
    result = on_its_host.result()[inst.id]
    if "listening" not in result.details:  # the connect did not run there: no verdict on the port
        return outcome(False, result.output, port=inst.port)
    return outcome(not result.details["listening"], f"{result.output}, on {inst.host.name}", port=inst.port)


def _connects_on(plan: Plan, host: Host, timeout: float) -> dict[str, Result]:
    """A connect to each of the host's instances' ports, run there at once (verify.remote)."""
    return HostReader(host).probes(plan.meshspec_bin, {i.id: (_connect(i), timeout) for i in plan.instances_on(host.name)})


def no_registrations(mesh: Mesh, timeout: float) -> Outcome:
    """None of this mesh's registrations remain; a registry that does not answer holds none of them
    only when it was the mesh's own agent (a real Consul must answer)."""
    read = _timed(lambda: registry_client(mesh, mesh_token(mesh.plan), timeout).agent.services(),
                  f"Consul at {mesh.registry.addr}")
    if read.error:
        own = mesh.plan.external_consul is None
        return outcome(own, f"{read.error}: {'the mesh’s own agent is gone' if own else 'cannot tell'}")
    ours = sorted(i for i, s in read.data.items() if is_ours(s, mesh.plan.spec.mesh.name))
    return outcome(not ours, f"registered still: {', '.join(ours)}" if ours else "none registered", left=ours)


def no_programs(mesh: Mesh, host: Host, timeout: float) -> Outcome:
    found = HostReader(host).supervisor(mesh.plan.meshspec_bin, str(mesh.plan.layout.supervisor_socket), timeout)
    if found.error:
        return outcome(True, found.error)
    return outcome(False, f"supervisord still runs {len(found.states)} programs", programs=sorted(found.states))


def no_containers(mesh: Mesh, timeout: float) -> Outcome:
    found = Supervisor.read_containers(ownership(mesh.plan), timeout)
    if found.error:  # the engine cannot say whose containers run: the kernel says whether any does
        inside = processes_in_containers()
        if inside:
            return outcome(False, f"{found.error}; {len(set(inside.values()))} Docker containers still run"
                                  f" (pids {', '.join(map(str, sorted(inside)[:5]))}): cannot tell whose")
        return outcome(True, f"{found.error}; no process runs in a Docker container (/proc/*/cgroup)")
    return outcome(not found.states, f"{len(found.states)} containers of this mesh" if found.states else "none",
                   containers=sorted(found.states))


def no_state(plan: Plan, host: Host) -> Outcome:
    reader = HostReader(host)
    left = [str(plan.layout.root / part) for part in OWNED if reader.exists(plan.layout.root / part)]
    return outcome(not left, f"left: {', '.join(left)}" if left else f"none of {', '.join(OWNED)} under {plan.layout.root}")


def verify_gone(mesh: Mesh, spec_path: str = "", timeout: float = 2.0, workers: int = MAX_WORKERS) -> VerifyRun:
    """After `make down`: nothing of the mesh on this host answers, runs, is registered or stays on disk."""
    started_at, started = now_iso(), time.perf_counter()
    plan = mesh.plan
    with forwards(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        # another host's connects first, in one SSH session: the pool takes its work in order
        on_hosts = {h.name: pool.submit(_connects_on, plan, h, timeout)
                    for h in plan.hosts if not h.is_local and plan.instances_on(h.name)}
        checks = [Planned(i.id, i.service, "port-free", lambda i=i: port_free(i, timeout, on_hosts.get(i.host.name)))
                  for i in plan.instances]
        checks += [Planned(MESH, None, "no-registrations", lambda: no_registrations(mesh, timeout)),
                   Planned(MESH, None, "no-containers", lambda: no_containers(mesh, timeout))]
        # each host's own, on it (one host: the subject is the mesh, as always)
        for host in plan.hosts:
            subject = MESH if len(plan.hosts) == 1 else host.name
            checks += [Planned(subject, None, "no-programs", lambda h=host: no_programs(mesh, h, timeout)),
                       Planned(subject, None, "no-state", lambda h=host: no_state(plan, h))]
        results = list(pool.map(_measure, checks))
    return VerifyRun(
        mesh=plan.spec.mesh.name, spec=spec_path, port_offset=plan.port_offset, state_dir=str(plan.layout.root),
        consul=mesh.registry.addr, started_at=started_at, finished_at=now_iso(),
        duration_ms=round((time.perf_counter() - started) * 1000, 2), checks=results, sources={},
    )
