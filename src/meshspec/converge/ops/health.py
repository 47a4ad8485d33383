"""Health: the deploy ends when every instance of the host runs and passes its check, and says so."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial

import click
from pyinfra import host
from pyinfra.api import OperationError, operation

from meshspec.common.damping import is_damped
from meshspec.converge import engine
from meshspec.converge.facts.shared import SharedFact
from meshspec.converge.facts.supervisor import Programs
from meshspec.converge.ops.commands import UNREACHABLE, reported
from meshspec.converge.ops.consul import read_token
from meshspec.converge.registry import Registry
from meshspec.plan import Runtime

Running = Callable[[], dict[str, float]]  # {instance id: seconds it has run} of the instances that run now


def _statuses(registry: Registry, token_value: str | None, ids: list[str]) -> dict[str, tuple[str, str]]:
    """{instance id: (status, output)} of the instances' checks; 'missing' when not registered."""
    try:
        checks = registry.client(token_value).agent.checks()
    except UNREACHABLE:
        checks = {}
    found = {c.get("ServiceID"): (c["Status"], c.get("Output", "")) for c in checks.values()}
    return {i: found.get(i, ("missing", "not registered")) for i in ids}


def _seconds_since(started: str | None) -> float:
    """Seconds since the engine's StartedAt (0 when it has none)."""
    if not started:
        return 0.0
    return (datetime.now(timezone.utc) - datetime.fromisoformat(started)).total_seconds()


def _running(ids: list[str], runtime: Runtime, supervisor: str, owner: dict[str, str]) -> dict[str, float]:
    """{instance id: seconds it has run} of the instances that run now: supervisord says RUNNING
    (past startsecs), or their container runs."""
    if runtime.in_containers:
        found = engine.containers_labelled(owner) if engine.answering() else {}
        up = {c["instance"]: _seconds_since(c["started"]) for c in found.values() if c["status"] == "running"}
    else:
        # read anew each time (not facts.snapshot's): what runs now is the point
        programs = host.get_fact(Programs, socket=supervisor) or {}
        up = {name: float(p.uptime) for name, p in programs.items() if p.state == "RUNNING"}
    return {i: up[i] for i in ids if i in up}


def _passed(status: str, output: str) -> bool:
    """Passing, and by its latest probe: not a failure that flap damping still counts as passing."""
    return status == "passing" and not is_damped(output)


def _waiting(statuses: dict[str, tuple[str, str]], up: dict[str, float], settle: dict[str, float]) -> list[str]:
    """The instances not yet running and passing a check of themselves. A status is the instance's
    own only once it has run for its settle time: until then it may be one Consul kept across the
    restart (or the agent restored) from whatever ran before."""
    return sorted(i for i, s in statuses.items() if not _passed(*s) or up.get(i, -1) < settle[i])


def _measured(ids: list[str], statuses: dict[str, tuple[str, str]], up: dict[str, float], runtime: Runtime) -> str:
    """What one reading of supervisord (or the engine) and the registry found, as one line."""
    registered = sum(status != "missing" for status, _ in statuses.values())
    passing_now = sum(_passed(*s) for s in statuses.values())
    return f"{len(ids)} instances: {len(up)} running, {registered} registered, {passing_now} passing ({runtime})"


def _wait(registry: Registry, token_value: str | None, ids: list[str], running: Running, settle: dict[str, float],
          runtime: Runtime, timeout: float) -> None:
    deadline, shown = time.monotonic() + timeout, None
    while True:
        statuses, up = _statuses(registry, token_value, ids), running()
        waiting = _waiting(statuses, up, settle)
        if not waiting:
            click.echo(f"    [{host.name}] {_measured(ids, statuses, up, runtime)}")
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
def passing(registry: Registry, token: SharedFact, ids: list[str], runtime: Runtime, supervisor: str,
            owner: dict[str, str], settle: dict[str, float], timeout: float = 180):
    """
    Wait until every listed instance runs (supervisord RUNNING, or its container running) and passes
    a check of itself; fail naming those that do not. Both: damping keeps a program that was just
    restarted passing for a few intervals, so passing alone could end a deploy before it runs. And
    of itself: an instance counts only once it has run for its settle time (its check's TTL), within
    which the checker has probed it and reported; a status older than that is of what ran before.
    And passes: a check that damping holds passing after a failed probe does not count. It ends by
    saying what its last reading measured: how many instances run, are registered and pass.

    + registry: where Consul is
    + token: the token file's contents, read once per run
    + ids: this host's instance IDs
    + runtime: process (read supervisord) or docker (read the engine)
    + supervisor: supervisord's socket
    + owner: the labels of the mesh's containers
    + settle: {instance id: seconds it must have run before its status is its own}
    + timeout: seconds to wait
    """
    token_value = read_token(token)
    running = partial(_running, ids, runtime, supervisor, owner)
    statuses, up = _statuses(registry, token_value, ids), running()
    if not _waiting(statuses, up, settle):
        line = _measured(ids, statuses, up, runtime)
        click.echo(f"    [{host.name}] {line}")  # pyinfra prints noop reasons only with -v; this line is the point
        host.noop(line)
        return
    yield reported(_wait, registry, token_value, ids, running, settle, runtime, timeout)
