"""This host's part of the mesh, as deploys/mesh.py needs it: the plan's slice for one host.

Everything here is computed from the spec and pyinfra's inventory, and is pure once built: no
property reads the host. A bad spec or setting stops the deploy in `this_host`, before any
operation touches a host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property, lru_cache

from pyinfra import inventory
from pyinfra.facts.files import FileContents

from meshspec.common.consul_token import TOKEN_ENV
from meshspec.converge.facts.files import FileDigests, FileModes, FileOwners, MissingDirectories
from meshspec.converge.facts.snapshot import Fact
from meshspec.converge.facts.stamps import Stamps
from meshspec.converge.facts.supervisor import ProgramFiles, Programs
from meshspec.converge.facts.system import InstalledPackages, UserNames
from meshspec.converge.mesh import BIN_DIR, Mesh, load_mesh
from meshspec.converge.ops.supervisor import daemon_directories
from meshspec.converge.policy import refusal
from meshspec.converge.registry import Registry, agent_of
from meshspec.plan import LOCAL, LOOPBACK, Host, Instance, Plan, Runtime
from meshspec.render.acl import RegistryToken, description_prefix, mesh_tokens
from meshspec.render.checker import checker_program, checks_file
from meshspec.render.containers import ownership
from meshspec.render.files import rendered_files
from meshspec.render.installs import STAMP as INSTALLED
from meshspec.render.installs import Recipe, meshspec_recipe, recipe
from meshspec.render.intentions import intention_entries
from meshspec.render.preparation import STAMP as PREPARED
from meshspec.render.preparation import Preparation, preparation, users_of
from meshspec.render.probes import settle_ms
from meshspec.render.programs import Program, program
from meshspec.render.registrations import registration
from meshspec.render.secrets import (
    MANAGEMENT_TOKEN_FILE,
    ProxyCertificate,
    SecretFile,
    host_secret_files,
    proxy_certificate,
    reads_secret,
)
from meshspec.spec import SpecInvalid

__all__ = ["HostMesh", "this_host"]

# The docker runtime's host needs only the engine and the tool that makes the base image.
DOCKER_HOST_PACKAGES = ("docker.io", "mmdebstrap")
# Every host: the deploy reads supervisord's programs with curl (facts/supervisor.Programs).
HOST_PACKAGES = ("curl",)


def _mesh_host(h) -> Host:
    """A pyinfra host as the plan knows it: its address and groups are its data (plan.hosts.Host.pyinfra_data)."""
    address = h.data.get("mesh_address") or (LOOPBACK if h.name == LOCAL else h.name)
    return Host(h.name, address, groups=tuple(h.data.get("mesh_groups") or ()))


@dataclass(frozen=True)
class HostMesh:
    plan: Plan
    host_name: str
    runtime: Runtime
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
    def settle(self) -> dict[str, float]:
        """{instance id: seconds it must have run before its check's status is a probe of it}: its TTL."""
        return {i.id: settle_ms(self.plan, i) / 1000 for i in self.instances}

    @property
    def host_label(self) -> str:
        return self.instances[0].host.label if self.instances else ""

    @property
    def debian_packages(self) -> list[str]:
        if self.runtime.in_containers:
            return sorted({*HOST_PACKAGES, *DOCKER_HOST_PACKAGES})
        venvs = ["python3-venv"] if any(r.pip for r in self.recipes) else []  # VENV_PYTHON's venv module
        return sorted({*HOST_PACKAGES, *venvs, *(p for s in self.services if s.process for p in s.process.install.apt)})

    @property
    def bin_dir(self) -> str:
        """Where this host's supervisord, supervisorctl and checker are, which run as root: in the
        process runtime, meshspec's install on the host (a host needs no checkout, nor the deploy's
        venv); in the docker runtime, which deploys to this machine alone, the deploy's venv."""
        if self.runtime.in_containers:
            return BIN_DIR
        return str(self.plan.cache.meshspec_dir(self.plan.meshspec_build) / "venv" / "bin")

    @property
    def cache_dir(self) -> str:
        """The host's install cache, shared by its meshes (the process runtime's installs)."""
        return str(self.plan.cache.root)

    @property
    def recipes(self) -> list[Recipe]:
        """The process runtime's installs, each in its directory of the install cache: meshspec's
        own first (the programs of meshspec's services run it), then the services'."""
        own = meshspec_recipe(str(self.plan.cache.meshspec_dir(self.plan.meshspec_build)),
                              self.plan.meshspec_build)
        found = (recipe(s.name, str(self.plan.install_dir(s.name)), s.process.install) for s in self.services if s.process)
        return [own, *(r for r in found if r)]

    @property
    def preparations(self) -> list[Preparation]:
        return [preparation(self.plan, i, self.runtime) for i in self.instances if self.plan.service(i.service).process]

    @property
    def owner(self) -> dict[str, str]:
        return ownership(self.plan)

    @cached_property  # the facts' digests and the Rendered files operation both ask
    def files(self) -> list[tuple[str, str]]:
        checks = (str(self.layout.checker_file), checks_file(self.plan, self.instances, self.runtime))
        return [f for i in self.instances if self.plan.service(i.service).process
                for f in rendered_files(self.plan, i)] + [checks]

    @property
    def programs(self) -> list[Program]:
        """supervisord's programs on this host: the checker, and the instances unless containers run them."""
        instances = [] if self.runtime.in_containers else [program(self.plan, i) for i in self.instances]
        return [checker_program(self.plan, self.instances, self.runtime, self.bin_dir), *instances]

    @property
    def registrations(self) -> list[dict]:
        return [registration(self.plan, i, self.runtime) for i in self.instances]

    @property
    def users(self) -> list[str]:
        """The system users this host's programs run as or need."""
        return sorted({u for s in self.services if s.process for u in users_of(s.process)})

    @property
    def facts(self) -> list[Fact]:
        """Every fact deploys/mesh.py's operations read of this host before they change it, as they
        read it (facts.snapshot reads them in one command): a fact missing here is read on its own."""
        conf, secrets = str(self.layout.supervisor_conf), self.secret_files
        files = [*(f.path for f in secrets), *(path for path, _ in self.files), conf]
        owned = [f.path for f in secrets] + ([self.token_path] if self.keeps_registry else [])
        facts = [(InstalledPackages, {}), (FileDigests, {"paths": files}), (FileOwners, {"paths": owned}),
                 (Stamps, {"root": str(self.layout.root / "instances"), "stamp": PREPARED}),
                 (MissingDirectories, {"paths": daemon_directories(self.layout)}),
                 (ProgramFiles, {"directory": str(self.layout.programs_dir)}), (Programs, {"socket": str(self.layout.supervisor_socket)})]
        if not self.runtime.in_containers:
            facts += [(Stamps, {"root": self.cache_dir, "stamp": INSTALLED}), (UserNames, {})]
        if self.keeps_registry:
            facts += [(FileContents, {"path": self.token_path}),
                      (FileModes, {"paths": [str(self.layout.consul_token_file.parent)]})]
        if cert := self.proxy_certificate:
            facts += [(FileContents, {"path": cert.path}), (FileContents, {"path": cert.ca_path})]
        return facts

    @property
    def token_path(self) -> str:
        return str(self.layout.consul_token_file)

    @property
    def registry_host(self) -> str:
        return self.plan.registry_host.name

    @property
    def keeps_registry(self) -> bool:
        return self.host_name == self.registry_host

    @cached_property  # as files
    def secret_files(self) -> list[SecretFile]:
        """The secret files this host keeps: its checker's and its services' Consul tokens, and the
        stats page's credentials if it runs the proxy."""
        return host_secret_files(self.plan, self.host_label, self.instances, owned=not self.runtime.in_containers)

    @property
    def proxy_certificate(self) -> ProxyCertificate | None:
        return proxy_certificate(self.plan, self.instances, owned=not self.runtime.in_containers)

    @property
    def token_owner(self) -> str | None:
        """Who owns the management token file besides root: the registry's user, when this host runs
        the embedded agent as a process (in the docker runtime its container runs as root)."""
        consul = self.plan.spec.consul.service
        if self.runtime.in_containers or not reads_secret(self.plan, consul, MANAGEMENT_TOKEN_FILE) or \
                consul not in {i.service for i in self.instances}:
            return None
        return self.plan.service(consul).process.user

    @property
    def mesh_tokens(self) -> list[RegistryToken]:
        """Every program token of the mesh, which its registry holds."""
        return mesh_tokens(self.plan)

    @property
    def intentions(self) -> list[dict]:
        return intention_entries(self.plan)

    @property
    def token_prefix(self) -> str:
        return description_prefix(self.plan)


@lru_cache(maxsize=1)
def _run_s_mesh(spec: str, hosts: tuple[Host, ...], port_offset: int, state_dir: str, external: str | None,
                runtime: Runtime, cache_dir: str | None) -> Mesh:
    """The mesh of this run, built once: pyinfra runs the deploy file once per host, in one process,
    and parsing and planning the spec again for each host was most of a no-op's time in this process."""
    return load_mesh(spec, list(hosts), port_offset, state_dir, external, runtime, cache_dir=cache_dir)


def this_host(host) -> HostMesh:
    """The mesh as `host` converges to it; exits with the spec's problems if it is invalid, or with
    what the chosen runtime refuses."""
    data = host.data
    external = data.consul_http_addr
    runtime = Runtime(data.mesh_runtime)
    try:
        mesh = _run_s_mesh(data.mesh_spec, tuple(_mesh_host(h) for h in inventory), data.mesh_port_offset,
                           data.mesh_state_dir, external, runtime, data.mesh_cache_dir)
    except SpecInvalid as err:
        raise SystemExit("\n".join(err.lines("no host was changed"))) from None
    if refused := refusal(mesh.plan, runtime, [h.name for h in inventory]):
        raise SystemExit(f"{refused}; no host was changed")
    token = os.environ.get(TOKEN_ENV) if external else None
    return HostMesh(mesh.plan, host.name, runtime, agent_of(mesh.plan, host.name, mesh.registry), token)
