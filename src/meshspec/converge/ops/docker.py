"""Docker: the engine, the mesh's images and one container per instance (the docker runtime).

The engine is reached with the Docker SDK from the machine running the deploy, so these
operations serve @local only (meshspec.converge.policy refuses other hosts with this runtime). State is
read through the SDK when the operation is planned, and changed with FunctionCommands that
re-read it when they run.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import FunctionCommand, operation

from meshspec.converge import builds, engine
from meshspec.render.containers import ContainerSpec
from meshspec.render.images import BaseImage, Image


@operation()
def running_engine():
    """
    Start dockerd when it does not answer (installed from Debian's docker.io; no systemd needed).

    Example: ``docker.running_engine(name="Docker engine")``
    """
    if engine.answering():
        host.noop("dockerd answers")
        return
    yield FunctionCommand(engine.start_engine, (), {})


@operation()
def images(base: BaseImage, layers: list[tuple[Image, Path | None]]):
    """
    Build the images the engine does not hold yet: the base, then the layers and grafts on their
    parents, several at a time.

    + base: the Debian base image (mmdebstrap + docker import)
    + layers: (layer or graft, source tree to mount or None)
    + Example: ``docker.images(name="Images", base=BaseImage(), layers=[(meshspec_layer(...), root)])``
    """
    present = {t for i in engine.client().images.list() for t in i.tags} if engine.answering() else set()
    missing = [layer.tag for layer, _ in layers if layer.tag not in present]
    if base.tag in present and not missing:
        host.noop(f"{len(layers) + 1} images are built")
        return
    yield FunctionCommand(builds.build_images, (base, layers), {})


@operation()
def containers(wanted: list[ContainerSpec], owner: dict[str, str]):
    """
    Make this mesh's containers exactly `wanted`, running; replace those whose spec hash changed.

    + wanted: the containers of this host's instances ([] removes them all)
    + owner: the labels marking the mesh's containers (meshspec.render.containers.ownership)
    + Example: ``docker.containers(name="No containers", wanted=[], owner=ownership(plan))``
    """
    current = engine.containers_labelled(owner) if engine.answering() else {}
    gone = sorted(set(current) - {c.name for c in wanted})
    stale = [c for c in wanted if current.get(c.name, {}).get("spec-hash") != c.spec_hash
             or current[c.name]["status"] != "running"]
    if not (gone or stale):
        host.noop(f"{len(wanted)} containers are as declared and running")
        return
    if gone:
        yield FunctionCommand(engine.remove_containers, (gone,), {})
    for spec in stale:
        yield FunctionCommand(engine.converge_container, (spec,), {})
