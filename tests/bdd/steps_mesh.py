"""Steps about the mesh as a whole: which mesh, converge, deploy, verify and drift, spec validation."""

from __future__ import annotations

import re
import time
from pathlib import Path

import yaml
from pytest_bdd import given, parsers, then, when

from meshspec.plan import make_plan
from meshspec.plan.hosts import LOCAL, LOOPBACK, Host
from meshspec.render.checker import CHECKER
from meshspec.render.containers import ownership
from meshspec.render.registrations import registration
from meshspec.spec import load_spec
from meshspec.verify.checks import Port, Supervisor
from tests.bdd.mesh_target import PROBLEM, changed_operations, validate, wait_for
from tests.integration.meshrun import REPO

# --- which mesh --------------------------------------------------------------------------------


@given("the mesh under test")
def _(world):
    """The mesh is there: its Consul agent answers and holds every planned instance's registration."""
    planned, where = {i.id for i in world.target.plan.instances}, f"{world.target.state_dir}, port offset {world.target.port_offset}"
    try:
        registered = set(world.target.consul().agent.services())
    except Exception as err:  # the agent of the settings does not answer: no mesh under test
        raise AssertionError(f"no mesh answers ({where}): its Consul agent: {err}") from None
    assert planned <= registered, (f"the mesh under test ({where}) lacks"
                                   f" {len(planned - registered)} of {len(planned)} registrations: {sorted(planned - registered)[:5]}")


@given(parsers.parse('the isolated mesh "{spec}"'))
def _(world, scratch_meshes, spec):
    world.target = scratch_meshes.get(yaml.safe_load((REPO / spec).read_text()), Path(spec).stem)


@given(parsers.parse('an isolated mesh of "{services}" from the spec with {n:d} replicas of "{service}"'))
def _(world, scratch_meshes, services, n, service):
    world.target = scratch_meshes.get(subset(world.target.spec_path, services, {service: n}), f"{service}-x{n}")


def subset(spec_path: str, services: str, replicas: dict[str, int]) -> dict:
    """The spec with only the named services (and their mesh-wide sections, and the intentions
    between them, and nothing else that names a service left out), some of them scaled."""
    spec = yaml.safe_load(Path(spec_path).read_text())
    names = [s.strip() for s in services.split(",")]
    spec["services"] = [s | ({"replicas": replicas[s["name"]]} if s["name"] in replicas else {})
                        for s in spec["services"] if s["name"] in names]
    missing = set(names) - {s["name"] for s in spec["services"]}
    assert not missing, f"not services of {spec_path}: {', '.join(sorted(missing))}"
    # the intentions between the services kept (an intention names a declared service, or *; a tool
    # intention's source may be a consumer)
    # the consumers, a key held by a service left out handed out by the operator instead; the
    # trace store, if kept
    spec["consumers"] = [{k: v for k, v in c.items() if k != "held_by" or v in names} for c in spec.get("consumers") or []]
    if (spec.get("tracing") or {}).get("store") not in (None, *names):
        spec["tracing"] = {**spec["tracing"], "store": None}
    kept = {*names, "*", *(c["name"] for c in spec["consumers"])}
    spec["intentions"] = [i for i in spec.get("intentions") or [] if {i["source"], i["destination"]} <= kept]
    return spec


# --- converge ----------------------------------------------------------------------------------


@given("the mesh is converged")
@then("the mesh is converged")
def _(world):
    world.changed()
    assert world.verify().ok, "; ".join(f.line for f in world.verify().failures)


@when("I deploy the mesh again")
def _(world):
    world.last = world.target.deploy()
    world.changed()


@then("the deploy succeeds")
def _(world):
    assert world.last.code == 0, world.last.output[-3000:]


@then("the deploy changed nothing")
def _(world):
    assert changed_operations(world.last) == [], world.last.output[-3000:]


@then("every planned instance is running")
def _(world):
    assert not (bad := [c.line for c in world.target.checks(check="running") if c.status != "passed"]), bad


@then("the counts agree")
def _(world):
    assert (c := world.target.checks(check="counts")[0]).status == "passed", c.reason


@then(parsers.parse("verify checks every instance in less than {seconds:g} seconds"))
def _(world, seconds):
    world.changed()
    assert world.verify().duration_ms < seconds * 1000, f"verify took {world.verify().duration_ms:.0f} ms"


# --- drift -------------------------------------------------------------------------------------


def broke(world, undo=None) -> None:
    """Mark the scenario as having changed reality: the world restores it (undo + deploy) afterwards."""
    world.broke = True
    if undo is not None:
        world.undo.append(undo)
    world.changed()


@when(parsers.parse('I stop the program of "{instance}"'))
def _(world, instance):
    broke(world, lambda: world.target.supervisorctl("start", instance))
    assert (done := world.target.supervisorctl("stop", world.target.instance(instance).id)).returncode == 0, done.stdout
    world.counters["stopped_at"] = time.time()


@when(parsers.parse('I kill the program of "{instance}"'))
def _(world, instance):
    broke(world)
    world.counters["killed_pid"] = world.target.kill(world.target.instance(instance).id)


@when(parsers.parse('I register "{sid}" of service "{name}" in Consul'))
def _(world, sid, name):
    broke(world, lambda: world.target.consul().agent.service.deregister(sid))
    world.target.consul().agent.service.register(name, service_id=sid, address=LOOPBACK, port=9, tags=["bdd"])


@when(parsers.parse('I deregister "{instance}" from Consul'))
def _(world, instance):
    broke(world)
    world.target.consul().agent.service.deregister(world.target.instance(instance).id)


@when(parsers.parse('I move the registration of "{instance}" to a port where nothing listens'))
def _(world, instance):
    body = registration(world.target.plan, world.target.instance(instance), world.target.runtime)
    port = next(p for p in range(body["Port"] + 1, body["Port"] + 50) if not Port(LOOPBACK, p).is_listening)
    broke(world)
    reregister(world, body | {"Port": port})


@when(parsers.parse('I change the tags of "{instance}" to "{tags}"'))
def _(world, instance, tags):
    body = registration(world.target.plan, world.target.instance(instance), world.target.runtime)
    broke(world)
    reregister(world, body | {"Tags": [t.strip() for t in tags.split(",")]})


@when(parsers.parse('I swap the check of "{instance}" for a TCP check, meta and all else kept'))
def _(world, instance):
    inst = world.target.instance(instance)
    body = registration(world.target.plan, inst, world.target.runtime)
    broke(world)
    tcp = {"CheckID": body["Check"]["CheckID"], "Name": body["Check"]["Name"], "TCP": f"{inst.address}:{inst.port}",
           "Interval": "10s", "Timeout": "2s"}
    reregister(world, body | {"Check": tcp})


def reregister(world, body: dict) -> None:
    world.target.consul().agent.service.register(
        name=body["Name"], service_id=body["ID"], address=body["Address"], port=body["Port"], tags=body["Tags"],
        meta=body["Meta"], check=body["Check"], replace_existing_checks=True)


@then("verify fails")
def _(world):
    assert not world.verify().ok, "verify passed: no drift was found"


@then(parsers.parse('verify reports "{fragment}"'))
def _(world, fragment):
    assert any(fragment in f.reason for f in world.verify().failures), [f.line for f in world.verify().failures]


@then(parsers.parse('verify reports "{fragment}" for "{subject}"'))
def _(world, fragment, subject):
    found = [f for f in world.verify().failures if f.subject == subject]
    assert any(fragment in f.reason for f in found), [f.line for f in world.verify().failures]


@then(parsers.parse('verify reports nothing about any instance but "{instance}"'))
def _(world, instance):
    assert {f.subject for f in world.verify().failures} <= {instance, "mesh"}, [f.line for f in world.verify().failures]


# --- the spec ----------------------------------------------------------------------------------


@when(parsers.parse('I validate the spec "{path}"'))
def _(world, path):
    world.last = validate(REPO / path)


@then("validation passes")
def _(world):
    assert world.last.returncode == 0, world.last.stderr


@then(parsers.parse('the summary reads "{summary}"'))
def _(world, summary):
    assert summary in world.last.stdout.splitlines(), world.last.stdout


@then(parsers.parse("validation fails with exit code {code:d}"))
def _(world, code):
    assert world.last.returncode == code, (world.last.returncode, world.last.stderr)


@then(parsers.parse('a problem is reported at line {line:d} under "{key}" saying "{fragment}"'))
def _(world, line, key, fragment):
    problems = [m.groupdict() for m in map(PROBLEM.match, world.last.stderr.splitlines()) if m]
    assert any(int(p["line"]) == line and p["key"] == key and fragment in p["message"] for p in problems), world.last.stderr


@then(parsers.parse('every malformed spec in "{folder}" is refused with the problems its header lists'))
def _(folder):
    wrong = []
    for path in sorted((REPO / folder).glob("*.yaml")):
        expected = [re.match(r"# expect: (\d+):(\d+) (\S+): (.+)$", line) for line in path.read_text().splitlines()
                    if line.startswith("# expect:")]
        stderr = validate(path).stderr
        got = [m.groupdict() for m in map(PROBLEM.match, stderr.splitlines()) if m]
        for e in expected:
            if not any((int(g["line"]), int(g["col"]), g["key"]) == (int(e[1]), int(e[2]), e[3]) and e[4] in g["message"]
                       for g in got):
                wrong.append(f"{path.name}: expected {e[0][10:]!r}, got {stderr.strip()[:200]!r}")
    assert not wrong, "\n".join(wrong)


@when(parsers.parse('I plan the spec "{path}" with port offset {offset:d}'))
def _(world, path, offset):
    world.last = make_plan(load_spec(REPO / path, port_offset=offset), [Host(LOCAL, LOOPBACK)], offset)


@then("no two instances share a port")
def _(world):
    ports = [p for i in world.last.instances for p in (i.port, *i.ports.values())]
    assert len(ports) == len(set(ports)), sorted(p for p in ports if ports.count(p) > 1)


@then(parsers.parse("every instance listens at its spec port plus {offset:d}"))
def _(world, offset):
    step = world.last.spec.mesh.replica_port_step
    assert all(i.port == world.last.service(i.service).port + i.replica * step + offset for i in world.last.instances)


@then(parsers.parse('the plan holds {n:d} instances on "{address}"'))
def _(world, n, address):
    assert sum(i.address == address for i in world.last.instances) == n == len(world.last.instances)


@then("the host runs exactly the planned instances")
def _(world):
    """What supervisord (or the engine) runs, read through supervisorctl (or the Docker SDK)."""
    compare_running({i.id for i in world.target.plan.instances}, running_instances(world.target))


def running_instances(target) -> set[str]:
    if target.runtime.in_containers:
        found = Supervisor.read_containers(ownership(target.plan))
        assert not found.error, found.error
        return {i for i, (state, _) in found.states.items() if state == "RUNNING"}
    out = target.supervisorctl("status").stdout  # exits non-zero when some program is not running
    running = {p[0] for line in out.splitlines() if len(p := line.split()) >= 2 and p[1] == "RUNNING"}
    return running - {CHECKER}  # the host's checker is the plan's, not an instance


def compare_running(planned: set[str], running: set[str]) -> None:
    assert running == planned, (f"running but not planned: {sorted(running - planned)};"
                                f" planned but not running: {sorted(planned - running)}")


@then(parsers.parse('supervisord restarts "{instance}" within {seconds:d} seconds'))
def _(world, instance, seconds):
    old = world.counters.get("killed_pid")
    state = wait_for(lambda: (s := world.target.supervisor().states.get(instance)) and s[0] == "RUNNING" and s[1] != old and s,
                     seconds)
    assert state, f"{instance}: {world.target.supervisor().states.get(instance)} after {seconds} s (killed pid {old})"
