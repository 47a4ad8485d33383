"""Which probe proves that an instance does its job: the one definition behind its Consul check
(render.registrations), the host's checker (render.checker) and verify's `healthy` check, so all
run the same probe. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from meshspec.common import nonce
from meshspec.plan import Instance, Plan, Runtime
from meshspec.render.containers import container_name
from meshspec.spec.models import HealthTiming
from meshspec.spec.resolve import effective_health_timing

HTTP, MCP, TCP, COMMAND = "http", "mcp", "tcp", "command"
POSTGRES, MYSQL, REDIS, AMQP = "postgres", "mysql", "redis", "amqp"
#: Probes that speak a protocol to address:port, with the probe's own settings as `options`.
PROTOCOLS = (TCP, POSTGRES, MYSQL, REDIS, AMQP)
#: Those whose session logs in: with the service's credentials when it has them.
LOGINS = (POSTGRES, MYSQL, REDIS, AMQP)


@dataclass(frozen=True)
class Probe:
    kind: str  # http | mcp | tcp | postgres | mysql | redis | amqp | command
    url: str | None = None  # http, mcp
    method: str = "GET"  # http
    headers: dict[str, str] = field(default_factory=dict)  # http
    body: str | None = None  # http
    contains: str | None = None  # http: text the response body must contain
    # http: the requests ({method, url, headers, body, contains}) before and after its own
    before: tuple[dict, ...] = ()
    after: tuple[dict, ...] = ()
    eventually: bool = False  # http: read again until `contains` shows, within the timeout
    token_file: str | None = None  # http: the requests carry the Consul token this file holds, read as it runs
    # http: the requests carry the `user:password` this file holds (Basic); the PROTOCOLS: the session
    # logs in with them (the service's credentials), in place of the options' user and password
    credentials_file: str | None = None
    min_tools: int = 0  # mcp: tools/list must list at least this many
    address: str | None = None  # the PROTOCOLS
    port: int | None = None  # the PROTOCOLS
    options: dict[str, str] = field(default_factory=dict)  # the PROTOCOLS: user, database, query, ...
    argv: tuple[str, ...] = ()  # command
    container: str | None = None  # command: run inside this container (the docker runtime)
    # Whose port it is (runtime.probes.owner.Owner): the proof names who answered, and a port held
    # by anything but the instance's process tree fails it.
    owner: dict | None = None

    @property
    def target(self) -> str:
        """What the probe talks to, as a person reads it."""
        if self.kind == COMMAND:
            return " ".join(self.argv) + (f" (in container {self.container})" if self.container else "")
        return self.url or f"{self.address}:{self.port}"


def probe(plan: Plan, inst: Instance, runtime: Runtime = Runtime.PROCESS) -> Probe:
    """The instance's probe, as its service's `health` declares it. A command runs where the
    instance runs: on the host, or (docker runtime) in its container."""
    health = plan.service(inst.service).health
    port = inst.ports[health.http.port] if health.http and health.http.port else inst.port
    base = f"http://{inst.address}:{port}"
    inside = container_name(plan, inst) if Runtime(runtime).in_containers else None
    owner = {"address": inst.address, "port": inst.port, "program": None if inside else inst.id,
             "supervisor_socket": None if inside else str(plan.layout.supervisor_socket), "container": inside}
    if health.http:
        text = partial(_probe_text, plan, inst)
        http = health.http
        steps = {which: tuple({"method": s.method, "url": base + text(s.path), "body": text(s.body),
                               "headers": {k: text(v) for k, v in s.headers.items()}, "contains": text(s.contains)}
                              for s in getattr(http, which))
                 for which in ("before", "after")}
        return Probe(HTTP, base + text(http.path), http.method, {k: text(v) for k, v in http.headers.items()},
                     text(http.body), text(http.contains), owner=owner, eventually=http.eventually,
                     token_file=str(plan.layout.service_token_file(inst.service)) if http.consul_token else None,
                     credentials_file=text(http.credentials), **steps)
    if health.mcp:
        return Probe(MCP, base + health.mcp.path, min_tools=health.mcp.min_tools, owner=owner)
    if health.probe in PROTOCOLS:
        options = getattr(health, health.probe).model_dump()
        logs_in = plan.service(inst.service).credentials and health.probe in LOGINS
        return Probe(health.probe, address=inst.address, port=inst.port, options=options, owner=owner,
                     credentials_file=str(plan.layout.probe_credentials_file(inst.service)) if logs_in else None)
    return Probe(COMMAND, argv=tuple(plan.render(inst, a) for a in health.command), container=inside, owner=owner)


def _probe_text(plan: Plan, inst: Instance, text: str | None) -> str | None:
    """A probe's text with the instance's placeholders filled in; `{nonce}` stays for each run to fill."""
    return None if text is None else plan.render(inst, text, **{nonce.NAME: nonce.MARK})


def ttl_ms(timing: HealthTiming) -> int:
    """How long a check result stands before Consul turns it critical by itself: two missed
    reports and one probe's timeout. A checker that stops (crashed, host frozen) turns its checks
    critical within this; a probe that is merely slow never does."""
    return 2 * timing.interval + timing.timeout


def settle_ms(plan: Plan, inst: Instance) -> int:
    """How long an instance must have run before its check's status is a probe of it: its TTL. The
    checker probes within an interval of the start (its first probes are spread over at most one),
    and the probe ends within its timeout; a status older than that may be one Consul kept across
    the restart, or the agent restored, from what ran before."""
    return ttl_ms(effective_health_timing(plan.spec, plan.service(inst.service)))
