"""Steps about the docker runtime: the engine's containers as the mesh's instances."""

from __future__ import annotations

import os
import signal
from functools import cache

import docker
from pytest_bdd import parsers, then, when

from meshspec.render.containers import HASH_LABEL, INSTANCE_LABEL, container_name, ownership
from tests.bdd.mesh_target import wait_for
from tests.bdd.steps_mesh import broke


@cache
def _engine() -> docker.DockerClient:
    return docker.from_env()


def _containers(world) -> dict[str, docker.models.containers.Container]:
    """{instance id: container} of the mesh under test, read from the engine by its ownership labels."""
    found = _engine().containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in ownership(world.target.plan).items()]})
    return {c.labels[INSTANCE_LABEL]: c for c in found}


def _container(world, instance):
    return _engine().containers.get(container_name(world.target.plan, world.target.instance(instance)))


@then("Docker runs one container per planned instance, labelled with its instance and spec hash")
def _(world):
    found = _containers(world)
    planned = sorted(i.id for i in world.target.plan.instances)
    assert sorted(found) == planned, f"containers {sorted(found)} != instances {planned}"
    assert not (down := [i for i, c in found.items() if c.status != "running"]), f"not running: {down}"
    assert all(c.labels.get(HASH_LABEL) for c in found.values())


@then("every container runs on the host network under docker-init with a restart policy")
def _(world):
    for instance, c in _containers(world).items():
        host = c.attrs["HostConfig"]
        assert host["NetworkMode"] == "host", f"{instance}: network {host['NetworkMode']}"
        assert host["Init"] is True, f"{instance}: no docker-init"
        assert host["RestartPolicy"]["Name"] == "unless-stopped", f"{instance}: {host['RestartPolicy']}"


@when(parsers.parse('I stop the container of "{instance}"'))
def _(world, instance):
    broke(world)
    _container(world, instance).stop(timeout=30)


@when(parsers.parse('I kill the process of the container of "{instance}"'))
def _(world, instance):
    broke(world)
    container = _container(world, instance)
    world.counters["killed_pid"] = container.attrs["State"]["Pid"]
    os.kill(world.counters["killed_pid"], signal.SIGKILL)


@then(parsers.parse('Docker restarts the container of "{instance}" within {seconds:d} seconds'))
def _(world, instance, seconds):
    old = world.counters["killed_pid"]

    def restarted():
        c = _container(world, instance)
        return c.status == "running" and c.attrs["State"]["Pid"] not in (0, old) and c

    assert wait_for(restarted, seconds), f"{instance} not running again within {seconds} s (killed pid {old})"
