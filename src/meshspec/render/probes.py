"""Which probe proves that an instance does its job: the one definition behind its Consul check
(render.registrations) and verify's `healthy` check, so both always run the same probe. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshspec.plan import Instance, Plan, Runtime
from meshspec.render.containers import container_name

HTTP, MCP, TCP, COMMAND = "http", "mcp", "tcp", "command"


@dataclass(frozen=True)
class Probe:
    kind: str  # http | mcp | tcp | command
    url: str | None = None  # http, mcp
    method: str = "GET"  # http
    headers: dict[str, str] = field(default_factory=dict)  # http
    body: str | None = None  # http
    min_tools: int = 0  # mcp: tools/list must list at least this many
    address: str | None = None  # tcp
    port: int | None = None  # tcp
    argv: tuple[str, ...] = ()  # command
    container: str | None = None  # command: run inside this container (the docker runtime)


def probe(plan: Plan, inst: Instance, runtime: Runtime = Runtime.PROCESS) -> Probe:
    """The instance's probe, as its service's `health` declares it. A command runs where the
    instance runs: on the host, or (docker runtime) in its container."""
    health = plan.service(inst.service).health
    base = f"http://{inst.address}:{inst.port}"
    if health.http:
        return Probe(HTTP, base + health.http.path, health.http.method, dict(health.http.headers), health.http.body)
    if health.mcp:
        return Probe(MCP, base + health.mcp.path, min_tools=health.mcp.min_tools)
    if health.tcp:
        return Probe(TCP, address=inst.address, port=inst.port)
    inside = container_name(plan, inst) if Runtime(runtime).in_containers else None
    return Probe(COMMAND, argv=tuple(plan.render(inst, a) for a in health.command), container=inside)
