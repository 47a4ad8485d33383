"""Health: the deploy ends when every instance of the host runs and passes its check, and says so."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import click
from pyinfra import host
from pyinfra.api import FunctionCommand, OperationError, operation

from meshspec.converge import engine
from meshspec.converge.facts.shared import SharedFact
from meshspec.converge.facts.supervisor import ProgramStates
from meshspec.converge.ops.consul import UNREACHABLE, read_token
from meshspec.converge.registry import Registry
from meshspec.plan import Runtime

Running = Callable[[], set[str]]  # the ids of the instances that run now


def _statuses(registry: Registry, token_value: str | None, ids: list[str]) -> dict[str, tuple[str, str]]:
    """{instance id: (status, output)} of the instances' checks; 'missing' when not registered."""
    try:
        checks = registry.client(token_value).agent.checks()
    except UNREACHABLE:
        checks = {}
    found = {c.get("ServiceID"): (c["Status"], c.get("Output", "")) for c in checks.values()}
    return {i: found.get(i, ("missing", "not registered")) for i in ids}


def _running(ids: list[str], runtime: Runtime, supervisor: tuple[str, str], owner: dict[str, str]) -> set[str]:
    """The instances that run now: supervisord says RUNNING (past startsecs), or their container runs."""
    if runtime.in_containers:
        found = engine.containers_labelled(owner) if engine.answering() else {}
        up = {c["instance"] for c in found.values() if c["status"] == "running"}
        return {i for i in ids if i in up}
    ctl, conf = supervisor
    states = host.get_fact(ProgramStates, ctl=ctl, conf=conf)
    return {i for i in ids if states.get(i) == "RUNNING"}


def _wait(registry: Registry, token_value: str | None, ids: list[str], running: Running, timeout: float) -> None:
    deadline, shown = time.monotonic() + timeout, None
    while True:
        statuses, up = _statuses(registry, token_value, ids), running()
        waiting = sorted(i for i, (status, _) in statuses.items() if status != "passing" or i not in up)
        if not waiting:
            click.echo(f"    {len(ids)}/{len(ids)} instances running and passing")
            return
        if len(waiting) != shown:
            shown = len(waiting)
            click.echo(f"    {len(ids) - shown}/{len(ids)} running and passing;"
                       f" waiting for {', '.join(waiting[:6])}{' ...' if shown > 6 else ''}")
        if time.monotonic() > deadline:
            lines = [f"{i}: {'running' if i in up else 'not running'}, {statuses[i][0]}: {statuses[i][1].strip()[:200]}"
                     for i in waiting]
            raise OperationError(f"{len(waiting)} instance(s) not running and passing after {timeout:.0f}s:\n"
                                 + "\n".join(lines))
        time.sleep(0.25)


@operation()
def passing(registry: Registry, token: SharedFact, ids: list[str], runtime: Runtime, supervisor: tuple[str, str],
            owner: dict[str, str], timeout: float = 180):
    """
    Wait until every listed instance runs (supervisord RUNNING, or its container running) and passes
    its Consul check; fail naming those that do not. Both: damping keeps a program that was just
    restarted passing for a few intervals, so passing alone could end a deploy before it runs.

    + registry: where Consul is
    + token: the token file's contents, read once per run
    + ids: this host's instance IDs
    + runtime: process (read supervisord) or docker (read the engine)
    + supervisor: (supervisorctl, supervisord's configuration)
    + owner: the labels of the mesh's containers
    + timeout: seconds to wait
    """
    token_value = read_token(token)
    running = partial(_running, ids, runtime, supervisor, owner)
    statuses = _statuses(registry, token_value, ids)
    if running() == set(ids) and all(status == "passing" for status, _ in statuses.values()):
        host.noop(f"{len(ids)}/{len(ids)} instances running and passing")
        return
    yield FunctionCommand(_wait, (registry, token_value, ids, running, timeout), {})


@operation()
def summary(registry: Registry, token: SharedFact, ids: list[str], runtime: Runtime, supervisor: tuple[str, str],
            owner: dict[str, str]):
    """
    Report what was measured just now: instances running (supervisord or Docker), registered and passing (Consul).

    + registry: where Consul is
    + token: the token file's contents, read once per run
    + ids: this host's instance IDs
    + runtime: process (read supervisord) or docker (read the engine)
    + supervisor: (supervisorctl, supervisord's configuration)
    + owner: the labels of the mesh's containers
    """
    running = len(_running(ids, runtime, supervisor, owner))
    statuses = _statuses(registry, read_token(token), ids)
    registered = sum(status != "missing" for status, _ in statuses.values())
    passing_now = sum(status == "passing" for status, _ in statuses.values())
    line = f"{len(ids)} instances: {running} running, {registered} registered, {passing_now} passing ({runtime})"
    click.echo(f"    [{host.name}] {line}")  # pyinfra prints noop reasons only with -v; this line is the point
    host.noop(line)
    yield from ()  # an operation is a generator, even one that only reports
