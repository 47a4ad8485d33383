"""The docker runtime's images and containers for this host: what to build, and what each
instance runs.

Building the plan reads this host (its Node.js, meshspec's source tree), so it is an explicit
call, `image_plan(mesh)`, made once where the deploy needs it; what it returns is pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshspec.converge import builds
from meshspec.converge.host import HostMesh
from meshspec.converge.source import source_digest, source_root
from meshspec.render import images
from meshspec.render.containers import INSTANCE_LABEL, ContainerSpec, container_spec
from meshspec.render.installs import recipe


@dataclass(frozen=True)
class ImagePlan:
    base: images.BaseImage
    meshspec_layer: images.Layer
    source_root: Path
    service_images: dict[str, list[images.Image]]  # {service: its own image, parents first}
    containers: list[ContainerSpec]

    @property
    def layers(self) -> list[tuple[images.Image, Path | None]]:
        """Every image to build on the base, parents first, with the source tree the meshspec layer mounts."""
        own = [(image, None) for built in self.service_images.values() for image in built]
        return [(self.meshspec_layer, self.source_root), *own]

    @property
    def containers_by_instance(self) -> dict[str, ContainerSpec]:
        return {c.labels[INSTANCE_LABEL]: c for c in self.containers}


def plan_images(mesh: HostMesh, node: images.Node | None, source_root: Path, source_digest: str) -> ImagePlan:
    """Pure: the images and containers of `mesh` given the host's Node.js and meshspec's source."""
    base = images.BaseImage(node=node)
    meshspec_layer = images.meshspec_layer(base, source_digest)
    own = {}
    for s in mesh.services:
        if s.process is None or (s.container and s.container.image):
            continue
        install = recipe(s.name, images.install_dir(s.name), s.process.install)
        own[s.name] = images.service_images(base, meshspec_layer, s, install)
    plan = mesh.plan
    containers = [container_spec(plan, i, images.image_for(base, meshspec_layer, plan.service(i.service),
                                                           own.get(i.service, [])))
                  for i in mesh.instances]
    return ImagePlan(base, meshspec_layer, source_root, own, containers)


def image_plan(mesh: HostMesh) -> ImagePlan:
    """Reads this host's Node.js (a subprocess) and hashes meshspec's source tree, then plans."""
    root = source_root()
    return plan_images(mesh, builds.host_node(), root, source_digest(root))
