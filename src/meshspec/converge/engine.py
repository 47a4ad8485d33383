"""The Docker engine through the Docker SDK: start it, and run the mesh's containers.

Side effects only; what to run comes from meshspec.render.containers (and the images from
meshspec.converge.builds). Every function re-reads the engine before it acts, so a step planned before the
engine ran (or while another deploy ran) does only what is still missing.
"""

from __future__ import annotations

import os
import subprocess
import time

import docker
from docker.errors import DockerException, ImageNotFound, NotFound
from pyinfra.api import OperationError

from meshspec.render.containers import (
    DOCKER_SOCKET,
    HASH_LABEL,
    INSTANCE_LABEL,
    STOP_TIMEOUT_LABEL,
    ContainerSpec,
    same_paths,
)

ENGINE_LOG = "/var/log/meshspec-dockerd.log"


def client(timeout: int = 120) -> docker.DockerClient:
    return docker.from_env(timeout=timeout)


def answering() -> bool:
    try:
        return client(timeout=5).ping()
    except DockerException:
        return False


def start_engine(timeout: float = 60) -> None:
    """Start dockerd detached (no systemd here) and wait until it answers."""
    with open(ENGINE_LOG, "ab") as log:
        subprocess.Popen(["dockerd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not answering():
        if time.monotonic() > deadline:
            raise OperationError(f"dockerd did not answer within {timeout:.0f}s; see {ENGINE_LOG}")
        time.sleep(0.2)


def has_image(tag: str) -> bool:
    try:
        client().images.get(tag)
        return True
    except ImageNotFound:
        return False


def run_once(image: str, script: str, volumes: dict[str, str]) -> None:
    """Run `script` as root in a throwaway container of `image` (an instance's prepare commands)."""
    try:
        client(timeout=600).containers.run(
            image, ["sh", "-c", script], remove=True, network_mode="host", user="root",
            volumes=same_paths(volumes))
    except docker.errors.ContainerError as err:
        raise OperationError(f"{script.splitlines()[-1]} failed in {image}: {err.stderr.decode(errors='replace')[-2000:]}") from None


def converge_container(spec: ContainerSpec) -> None:
    """Make the container `spec` says, running: replaced only when its spec hash differs."""
    engine = client()
    try:
        current = engine.containers.get(spec.name)
    except NotFound:
        current = None
    if current is not None and current.labels.get(HASH_LABEL) == spec.spec_hash:
        if current.status != "running":
            current.start()
        return
    if current is not None:
        _stop(current)
    for path in spec.volumes:
        # directories are made if missing; files (the engine socket, token files the deploy wrote
        # before any container) are mounted as they are
        if path != DOCKER_SOCKET and not os.path.isfile(path):
            os.makedirs(path, exist_ok=True)
    engine.containers.run(detach=True, **spec.run_kwargs())


def _stop(container) -> None:
    container.stop(timeout=int(container.labels.get(STOP_TIMEOUT_LABEL, "10")))
    container.remove(force=True)


def remove_containers(names: list[str]) -> None:
    """Stop (each with its own stop signal and timeout) and remove."""
    engine = client()
    for name in names:
        try:
            container = engine.containers.get(name)
        except NotFound:
            continue
        _stop(container)


def containers_labelled(labels: dict[str, str], timeout: int = 120) -> dict[str, dict]:
    """{name: {status, spec-hash, instance, pid, started}} of the containers carrying all `labels` (any
    state); `started` is the engine's StartedAt (ISO 8601, UTC)."""
    engine = client(timeout)
    try:
        found = engine.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
    finally:
        engine.close()
    return {c.name: {"status": c.status, "spec-hash": c.labels.get(HASH_LABEL), "instance": c.labels.get(INSTANCE_LABEL),
                     "pid": c.attrs["State"].get("Pid") or None, "started": c.attrs["State"].get("StartedAt")}
            for c in found}
