"""The mesh as settings describe it: the validated spec, its plan and its registry.

The deploy (with pyinfra's inventory) and `meshspec verify` (with the configured hosts) both
build the plan here, so they always agree on what the mesh should be.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from meshspec import settings
from meshspec.converge.registry import Registry
from meshspec.converge.source import installed_build
from meshspec.plan import Host, Plan, Runtime, make_plan
from meshspec.plan.hosts import inventory_names
from meshspec.plan.layout import InstallCache
from meshspec.render import images
from meshspec.spec import load_spec

# The deploy's own supervisord, supervisorctl and meshspec-checker, beside the running Python: the
# docker runtime's (this machine only) and the tools that read a mesh of this machine. A host of
# the process runtime runs its own, from its install of meshspec (HostMesh.bin_dir).
BIN_DIR = str(Path(sys.executable).parent)


@dataclass(frozen=True)
class Mesh:
    plan: Plan
    registry: Registry


def load_mesh(spec_path: str, hosts: list[Host], port_offset: int, state_dir: str, consul_addr: str | None,
              runtime: Runtime = Runtime.PROCESS, cache_dir: str | None = None) -> Mesh:
    """Raises SpecInvalid for a bad spec. `consul_addr`: a real Consul's address, or None for the embedded agent.
    With the docker runtime, meshspec and the installs are where the images hold them; with the
    process runtime, installs are in the host's install cache `cache_dir` (default: settings'),
    meshspec's own among them (this deploy's source, installed by the deploy)."""
    spec = load_spec(spec_path, port_offset=port_offset, inventory=inventory_names(hosts))
    cache_dir, build = cache_dir or settings.cache_dir(), installed_build()
    places = ({"meshspec_bin": images.MESHSPEC_BIN, "install_root": str(images.INSTALL_ROOT)}
              if Runtime(runtime).in_containers else
              {"meshspec_bin": str(InstallCache(PurePosixPath(cache_dir)).meshspec_dir(build) / "venv/bin/meshspec")})
    plan = make_plan(spec, hosts, port_offset, state_dir, external_consul=consul_addr,
                     cache_dir=cache_dir, meshspec_build=build, **places)
    return Mesh(plan, Registry.from_addr(plan.consul_addr, embedded=consul_addr is None))


def configured_mesh() -> Mesh:
    """The mesh the environment's settings describe (MESH_*, CONSUL_HTTP_ADDR), as `meshspec verify`
    and the load tests read it. Raises SpecInvalid, SettingsError or HostsError."""
    return load_mesh(settings.spec_path(), settings.configured_hosts(), settings.port_offset(), settings.state_dir(),
                     settings.consul_http_addr(), settings.runtime(), settings.cache_dir())
