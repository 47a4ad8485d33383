"""Steps about health and discovery: each one line over a `meshspec.verify` check or one Consul read."""

from __future__ import annotations

from pytest_bdd import parsers, then

from meshspec.verify.checks import Check, McpServer, Registrations
from tests.bdd.mesh_target import wait_for


def failing(checks) -> list[str]:
    return [f"{c.id}: {c.reason}" for c in checks if c.status == "failed"]


@then(parsers.parse('every instance of "{service}" is passing'))
def _(world, service):
    assert not (bad := failing(world.target.checks(service=service))), bad


@then(parsers.parse('every instance of "{service}" is passing within {seconds:d} seconds'))
def _(world, service, seconds):
    wait_for(lambda: not failing(world.target.checks(service=service)), seconds, interval=1)
    assert not (bad := failing(world.target.checks(service=service))), bad


@then("every instance is passing")
def _(world):
    assert not (bad := failing(world.target.checks(check="passing") + world.target.checks(check="healthy"))), bad


@then(parsers.parse('"{service}" does its job'))
def _(world, service):
    assert not (bad := failing(world.target.checks(service=service, check="healthy"))), bad


@then(parsers.parse('the MCP server "{service}" completes the handshake with at least {n:d} tools'))
def _(world, service, n):
    for inst in world.target.instances_of(service):
        server = McpServer(f"http://{inst.address}:{inst.port}{world.target.plan.service(service).health.mcp.path}",
                           timeout=10, min_tools=n)
        assert server.completes_handshake, server.reason


@then(parsers.parse('the Consul check of "{instance}" is {status} within {seconds:d} seconds'))
def _(world, instance, status, seconds):
    check = lambda: Check(world.target.consul().agent.checks(), f"service:{instance}")  # noqa: E731
    wait_for(lambda: check().status == status, seconds, interval=0.5)
    assert check().status == status, check().reason


# --- discovery ---------------------------------------------------------------------------------


@then("every planned instance is registered as declared")
def _(world):
    assert not (bad := failing(world.target.checks(check="registered"))), bad


@then("Consul carries no registration the spec does not declare")
def _(world):
    regs = Registrations(world.target.consul().agent.services(), [i.id for i in world.target.plan.instances])
    assert regs.has_no_unexpected, regs.reason


@then("Consul's catalog lists every service of the plan")
def _(world):
    _, catalog = world.target.consul().catalog.services()
    assert not (missing := sorted({i.service for i in world.target.plan.instances} - set(catalog))), missing


@then(parsers.parse("Consul's passing instances of \"{service}\" are its planned instances"))
def _(world, service):
    _, entries = world.target.consul().health.service(service, passing=True)
    found = {(e["Service"]["ID"], e["Service"]["Address"], e["Service"]["Port"]) for e in entries}
    assert found == {(i.id, i.address, i.port) for i in world.target.instances_of(service)}, found


@then(parsers.parse('Prometheus has a healthy scrape target for every instance of "{service}"'))
def _(world, service):
    import httpx

    prom = world.target.instances_of("prometheus")[0]
    targets = httpx.get(f"http://{prom.address}:{prom.port}/api/v1/targets", trust_env=False, timeout=5).json()
    up = {t["scrapeUrl"].split("/")[2] for t in targets["data"]["activeTargets"] if t["health"] == "up"}
    metrics = world.target.plan.service(service).metrics
    assert metrics is not None, f"{service} declares no metrics"
    ports = {i.id: i.ports[metrics.port] if metrics.port else i.port for i in world.target.instances_of(service)}
    missing = [iid for iid, port in ports.items() if f"{world.target.instance(iid).address}:{port}" not in up]
    assert not missing, f"not scraped (up) by Prometheus: {missing}; up: {sorted(up)[:8]}…"
