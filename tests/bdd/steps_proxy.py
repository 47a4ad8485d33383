"""Steps about the data plane: routing, load balancing and resilience through the mesh proxy."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from pytest_bdd import parsers, then, when

from meshspec.render.haproxy import balance_lines
from meshspec.spec.resolve import effective_routing
from meshspec.verify.run import not_routed
from tests.bdd.mesh_target import wait_for


def get(world, path: str) -> httpx.Response | str:
    try:
        return httpx.get(world.target.proxy_url + path, trust_env=False, timeout=10)
    except httpx.HTTPError as err:
        return f"{type(err).__name__}: {err}"


# --- routing -----------------------------------------------------------------------------------


@then(parsers.parse('"{service}" is reachable through the proxy'))
def _(world, service):
    assert (c := world.target.checks(service=service, check="routable")[0]).status == "passed", c.reason


@then(parsers.parse('"{service}" is not routed through the proxy'))
def _(world, service):
    assert not_routed(world.target.mesh.plan, service), f"the spec routes {service}"  # so verify checks no route
    assert isinstance(r := get(world, f"/svc/{service}/"), httpx.Response) and r.status_code == 404, r


@when(parsers.parse('I request "{path}" through the proxy'))
def _(world, path):
    world.last = get(world, path)


@when(parsers.parse('I request the health path of "{service}" through the proxy'))
def _(world, service):
    world.last = get(world, world.target.routed_path(service))


@then(parsers.parse("the proxy answers HTTP {status:d}"))
def _(world, status):
    assert isinstance(world.last, httpx.Response) and world.last.status_code == status, world.last


@then(parsers.parse('the response carries the header "{header}"'))
def _(world, header):
    assert world.last.headers.get(header), dict(world.last.headers)


@then("the proxy runs the configuration the plan renders")
def _(world):
    status = world.target.controller_status()
    assert status.get("shape") == world.target.planned_shape["hash"], status


@then("the controller sees HAProxy and Consul")
def _(world):
    assert (s := world.target.controller_status()).get("haproxy") and s.get("consul"), s


# --- load balancing ----------------------------------------------------------------------------


@then(parsers.parse('the proxy has every instance of "{service}" up and ready within {seconds:d} seconds'))
def _(world, service, seconds):
    wait_for(lambda: not not_ready(world, service), seconds, interval=0.2)
    assert not (bad := not_ready(world, service)), bad


@then(parsers.parse('the proxy has every instance of "{service}" up and ready'))
def _(world, service):
    assert not (bad := not_ready(world, service)), bad


def not_ready(world, service) -> list[str]:
    servers = {s.name: s for s in world.target.proxy_servers(service)}
    bad = [f"{i.id}: {'absent' if i.id not in servers else f'op {servers[i.id].op_state} admin {servers[i.id].admin}'}"
           for i in world.target.instances_of(service) if i.id not in servers or not servers[i.id].is_up
           or servers[i.id].admin != "ready"]
    return bad


@then(parsers.parse('the proxy balances "{service}" with the "{policy}" policy of the spec'))
def _(world, service, policy):
    routing = effective_routing(world.target.plan.spec, world.target.plan.service(service))
    assert routing.lb.policy == policy, f"the spec balances {service} with {routing.lb.policy}, not {policy}"
    assert_balanced(service, routing, world.target.proxy_stats(service)["BACKEND"]["algo"])


def assert_balanced(service: str, routing, running: str) -> None:
    """What the running HAProxy does (`algo` of its stats) against the balance the spec's policy renders to."""
    wanted = balance_lines(routing)[0].split()[1].split("(")[0]
    assert running == wanted, f"HAProxy balances {service} with {running!r}; the spec's {routing.lb.policy} is {wanted!r}"


@when(parsers.parse('I send {n:d} requests to "{service}" through the proxy'))
@then(parsers.parse('I send {n:d} requests to "{service}" through the proxy'))
def _(world, n, service):
    before = world.target.served(service)
    with ThreadPoolExecutor(max_workers=4) as pool:
        world.last = list(pool.map(lambda _: get(world, world.target.routed_path(service)), range(n)))
    after = world.target.served(service)
    world.counters = {name: after.get(name, 0) - before.get(name, 0) for name in after}


@then("every request succeeded")
def _(world):
    bad = [r if isinstance(r, str) else f"HTTP {r.status_code}" for r in world.last
           if isinstance(r, str) or not 200 <= r.status_code < 300]
    assert not bad, f"{len(bad)} of {len(world.last)} failed: {bad[:5]}"


@then(parsers.parse('each instance of "{service}" served between {low:d} and {high:d} of them'))
def _(world, service, low, high):
    served = {i.id: world.counters.get(i.id, 0) for i in world.target.instances_of(service)}
    assert all(low <= n <= high for n in served.values()), served


@then(parsers.parse('"{instance}" served none of them'))
def _(world, instance):
    assert world.counters.get(instance, 0) == 0, world.counters


@then(parsers.parse('"{instance}" leaves the proxy rotation within {seconds:d} seconds'))
def _(world, instance, seconds):
    service = world.target.instance(instance).service
    server = lambda: next(s for s in world.target.proxy_servers(service) if s.name == instance)  # noqa: E731
    wait_for(lambda: not server().is_up or server().admin != "ready", seconds, interval=0.2)
    assert not server().is_up or server().admin != "ready", server()


@then(parsers.parse('"{instance}" is back in the proxy rotation within {seconds:d} seconds'))
def _(world, instance, seconds):
    service = world.target.instance(instance).service
    server = lambda: next(s for s in world.target.proxy_servers(service) if s.name == instance)  # noqa: E731
    wait_for(lambda: server().is_up and server().admin == "ready", seconds, interval=0.2)
    assert server().is_up and server().admin == "ready", server()
