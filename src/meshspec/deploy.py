"""This host's part of the mesh, as deploys/mesh.py needs it: validated spec, plan, and places.

Everything here is computed from the spec and pyinfra's inventory; a bad spec or setting stops
the deploy here, before any operation touches a host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pyinfra import inventory

from meshspec import builds, images
from meshspec.configs import rendered_files
from meshspec.containers import INSTANCE_LABEL, ContainerSpec, container_spec, ownership
from meshspec.hosts import LOCAL, LOOPBACK, Host
from meshspec.installs import Recipe, recipe
from meshspec.mesh import BIN_DIR, load_mesh
from meshspec.plan import Instance, Plan
from meshspec.preparation import Preparation, preparation
from meshspec.programs import Program, program
from meshspec.registrations import registration
from meshspec.registry import Registry
from meshspec.spec import SpecInvalid

__all__ = ["BIN_DIR", "HostMesh", "this_host"]

# The docker runtime's host needs only the engine and the tool that makes the base image.
DOCKER_HOST_PACKAGES = ("docker.io", "mmdebstrap")


def _mesh_host(h) -> Host:
    address = h.data.get("mesh_address") or (LOOPBACK if h.name == LOCAL else h.name)
    return Host(h.name, address)


@dataclass(frozen=True)
class HostMesh:
    plan: Plan
    host_name: str
    runtime: str
    registry: Registry
    given_token: str | None  # a real Consul's token; None: the embedded agent's own, made once

    @property
    def layout(self):
        return self.plan.layout

    @cached_property
    def instances(self) -> list[Instance]:
        return self.plan.instances_on(self.host_name)

    @cached_property
    def services(self):
        names = {i.service for i in self.instances}
        return [s for s in self.plan.spec.services if s.name in names]

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.instances]

    @property
    def host_label(self) -> str:
        return self.instances[0].host.label if self.instances else ""

    @property
    def debian_packages(self) -> list[str]:
        if self.runtime == "docker":
            return list(DOCKER_HOST_PACKAGES)
        return sorted({p for s in self.services if s.process for p in s.process.install.apt})

    @property
    def install_root(self) -> str:
        return str(self.layout.root / "install")

    @property
    def recipes(self) -> list[Recipe]:
        found = (recipe(s.name, str(self.layout.install_dir(s.name)), s.process.install) for s in self.services if s.process)
        return [r for r in found if r]

    @property
    def preparations(self) -> list[Preparation]:
        return [preparation(self.plan, i, self.runtime) for i in self.instances if self.plan.service(i.service).process]

    # --- the docker runtime ------------------------------------------------------------------

    @cached_property
    def base_image(self) -> images.BaseImage:
        return images.BaseImage(node=builds.host_node())

    @cached_property
    def meshspec_layer(self) -> images.Layer:
        return images.meshspec_layer(self.base_image, builds.source_digest(builds.source_root()))

    @cached_property
    def service_images(self) -> dict[str, list[images.Image]]:
        """{service: what its own image is built from}, for the services that need an image of their own."""
        found = {}
        for s in self.services:
            if s.process is None or (s.container and s.container.image):
                continue
            install = recipe(s.name, images.install_dir(s.name), s.process.install)
            found[s.name] = images.service_images(self.base_image, self.meshspec_layer, s, install)
        return found

    @property
    def layers(self) -> list[tuple[images.Image, Path | None]]:
        """Every image to build on the base, parents first, with the source tree the meshspec layer mounts."""
        own = [(image, None) for built in self.service_images.values() for image in built]
        return [(self.meshspec_layer, builds.source_root()), *own]

    def image_of(self, service) -> str:
        return images.image_for(self.base_image, self.meshspec_layer, service, self.service_images.get(service.name, []))

    @cached_property
    def containers(self) -> list[ContainerSpec]:
        return [container_spec(self.plan, i, self.image_of(self.plan.service(i.service))) for i in self.instances]

    @property
    def containers_by_instance(self) -> dict[str, ContainerSpec]:
        return {c.labels[INSTANCE_LABEL]: c for c in self.containers}

    @property
    def owner(self) -> dict[str, str]:
        return ownership(self.plan)

    @property
    def files(self) -> list[tuple[str, str]]:
        return [f for i in self.instances if self.plan.service(i.service).process for f in rendered_files(self.plan, i)]

    @property
    def programs(self) -> list[Program]:
        return [program(self.plan, i) for i in self.instances]

    @property
    def registrations(self) -> list[dict]:
        return [registration(self.plan, i, self.runtime) for i in self.instances]

    @property
    def token_path(self) -> str:
        return str(self.layout.consul_token_file)


def this_host(host) -> HostMesh:
    """The mesh as `host` converges to it; exits with the spec's problems if it is invalid."""
    data = host.data
    external = data.consul_http_addr
    runtime = data.mesh_runtime
    try:
        mesh = load_mesh(data.mesh_spec, [_mesh_host(h) for h in inventory], data.mesh_port_offset,
                         data.mesh_state_dir, external, runtime)
    except SpecInvalid as err:
        lines = [p.render(err.filename) for p in err.problems]
        raise SystemExit("\n".join([*lines, f"{len(lines)} problem(s) in the spec; no host was changed"])) from None
    if runtime == "docker" and any(h.name != LOCAL for h in inventory):
        raise SystemExit("MESH_RUNTIME=docker deploys to @local only: meshspec drives this machine's Docker engine "
                         "through the Docker SDK; no host was changed")
    built = [s.name for s in mesh.plan.spec.services if s.container and s.container.build]
    if runtime == "docker" and built:
        raise SystemExit(f"{', '.join(built)}: container.build is not supported yet; give container.image (from "
                         "your registry) or a process install to build from; no host was changed")
    container_only = [s.name for s in mesh.plan.spec.services if s.process is None]
    if runtime == "process" and container_only:
        raise SystemExit(f"{', '.join(container_only)}: no process, only a container: deploy with MESH_RUNTIME=docker; "
                         "no host was changed")
    token = os.environ.get("CONSUL_HTTP_TOKEN") if external else None
    return HostMesh(mesh.plan, host.name, runtime, mesh.registry, token)
