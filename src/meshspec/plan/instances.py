"""spec + hosts + port offset -> the instances to run: pure data, no side effects."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from meshspec.plan.hosts import LOOPBACK, Host, placed
from meshspec.plan.layout import MASTER_SOCKET, RUNTIME_SOCKET, STATS_CREDENTIALS, STATS_USERS, InstallCache, Layout
from meshspec.spec.models import Install, MeshSpec, Service
from meshspec.spec.placeholders import render

CACHE_DIR = "/var/cache/meshspec"  # as settings.DEFAULT_CACHE_DIR, which MESH_CACHE_DIR overrides


@dataclass(frozen=True)
class Instance:
    service: str
    replica: int
    host: Host
    port: int
    ports: dict[str, int] = field(default_factory=dict, hash=False)

    @property
    def id(self) -> str:
        """Stable across runs: `<name>-<host>-<replica>`."""
        return f"{self.service}-{self.host.label}-{self.replica}"

    @property
    def address(self) -> str:
        return self.host.address


@dataclass(frozen=True)
class Plan:
    spec: MeshSpec
    hosts: tuple[Host, ...]
    port_offset: int
    layout: Layout
    meshspec_bin: str
    instances: tuple[Instance, ...]
    external_consul: str | None = None  # a real Consul's address; then no agent instance is planned
    install_root: PurePosixPath | None = None  # where installs are in the docker runtime's images
    cache: InstallCache = InstallCache(PurePosixPath(CACHE_DIR))  # the host's installs, shared by its meshes
    # A digest of the meshspec code `meshspec_bin` runs (process runtime; the docker runtime's
    # images carry theirs): a program that runs it restarts when it changes, as after a `git pull`.
    meshspec_build: str = ""

    def service(self, name: str) -> Service:
        return next(s for s in self.spec.services if s.name == name)

    def instances_of(self, name: str) -> list[Instance]:
        return [i for i in self.instances if i.service == name]

    def instances_on(self, host_name: str) -> list[Instance]:
        return [i for i in self.instances if i.host.name == host_name]

    def metrics_port(self, inst: Instance) -> int | None:
        """Where an instance exports its metrics (None: its service declares no `metrics`)."""
        metrics = self.service(inst.service).metrics
        if metrics is None:
            return None
        return inst.ports[metrics.port] if metrics.port else inst.port

    def nearest(self, service: str, host: Host) -> Instance:
        """The instance of `service` a program on `host` is configured with: the one on its own host
        where there is one (a per-host service's, such as its proxy), else the service's first."""
        instances = self.instances_of(service)
        return next((i for i in instances if i.host == host), instances[0])

    def inbound_port(self, proxy: Instance) -> int | None:
        """The port a proxy instance takes the other hosts' proxies' calls on: its inbound port,
        where the mesh has more than one host (on one, nothing crosses a host)."""
        return proxy.ports.get(self.spec.proxy.inbound_port_name) if len(self.hosts) > 1 else None

    def egress_url(self, host: Host) -> str | None:
        """The HTTP proxy the programs of `host` send their scrapes of other hosts through: its
        proxy's egress listener, on loopback, where the mesh has more than one host."""
        proxy = self.proxy_for(host) if self.spec.proxy.service else None
        if proxy is None or proxy.host != host or not self.inbound_port(proxy):
            return None
        port = proxy.ports.get(self.spec.proxy.egress_port_name)
        return f"http://{LOOPBACK}:{port}" if port else None

    def tunnels_from(self, host: Host) -> bool:
        """Whether `host` runs a proxy that takes its programs' calls to other hosts (one with an
        inbound port: the other hosts' proxies have one too)."""
        proxy = self.spec.proxy.service
        return proxy is not None and any(i.host == host and self.inbound_port(i) for i in self.instances_of(proxy))

    def reach(self, service: str, host: Host) -> tuple[str, int]:
        """Where a program on `host` reaches `service`: its instance on that host; with none there,
        the host's own address at the service's port, where the host's proxy takes the connection
        to the service's instances over mTLS (render.haproxy.tunnel_block), so no call leaves a host
        in plaintext; without such a proxy, the service's first instance directly."""
        peer = self.nearest(service, host)
        if peer.host == host or not self.tunnels_from(host):
            return peer.address, peer.port
        return host.address, peer.port

    def tunnelled(self, host: Host) -> list[str]:
        """The services the programs of `host` reach through its proxy's tunnels: those they are
        configured with (dependencies, the registry, the trace store) that run on no instance there."""
        if not self.tunnels_from(host):
            return []
        here = [i for i in self.instances if i.host == host]
        wanted = {d for i in here for d in self.service(i.service).depends_on}
        if self.instances_of(self.spec.consul.service):
            wanted.add(self.spec.consul.service)
        if self.spec.tracing.store:
            wanted.add(self.spec.tracing.store)
        return sorted(s for s in wanted if all(i.host != host for i in self.instances_of(s)))

    def proxy_for(self, host: Host) -> Instance:
        """The proxy the programs of `host` call through: its own, or the first where it has none."""
        return self.nearest(self.spec.proxy.service, host)

    def values_for(self, inst: Instance) -> dict[str, object]:
        """The placeholder values of one instance (see meshspec.spec.placeholders)."""
        values: dict[str, object] = {
            "name": inst.service,
            "replica": inst.replica,
            "id": inst.id,
            "address": inst.address,
            "port": inst.port,
            "state_dir": self.layout.instance_dir(inst.id),
            "install_dir": self.install_dir(inst.service),
            "mesh.name": self.spec.mesh.name,
            "consul.addr": self.consul_addr_for(inst.host),
            "consul.token_file": self.layout.service_token_file(inst.service),
            "consul.management_token_file": self.layout.consul_token_file,
            "consul.ca_file": self.layout.connect_ca_file,
            "consul.ca_key_file": self.layout.connect_ca_key_file,
            "meshspec": self.meshspec_bin,
            "checker.metrics_dir": self.layout.checker_metrics_dir,
        }
        if self.spec.proxy.service is not None:
            proxy = self.proxy_for(inst.host)
            values["proxy.url"] = f"http://{_host_port(proxy)}"
            if (mtls := proxy.ports.get(self.spec.proxy.mtls_port_name)) is not None:
                values["proxy.mtls_url"] = f"https://{_host_port(proxy, mtls)}"
            values["proxy.runtime"] = self.proxy_runtime_of(proxy)
            values["proxy.master"] = self.proxy_master_bind(proxy)
            values["proxy.stats_users"] = self.proxy_file(STATS_USERS, proxy)
            values["proxy.stats_credentials"] = self.proxy_file(STATS_CREDENTIALS, proxy)
        values |= {f"ports.{name}": port for name, port in inst.ports.items()}
        if credentials := self.service(inst.service).credentials:
            values["credentials.user"] = credentials.user
            values["credentials.file"] = self.layout.credentials_file(inst.service, inst.service)
        for dep in self.service(inst.service).depends_on:
            peer, (address, port) = self.nearest(dep, inst.host), self.reach(dep, inst.host)
            values |= {
                f"services.{dep}.address": address,
                f"services.{dep}.port": port,
                f"services.{dep}.url": f"http://{address}:{port}",
                f"services.{dep}.state_dir": self.layout.instance_dir(peer.id),
            }
            values |= {f"services.{dep}.ports.{name}": port for name, port in peer.ports.items()}
            if credentials := self.service(dep).credentials:
                values[f"services.{dep}.user"] = credentials.user
                values[f"services.{dep}.password_file"] = self.layout.credentials_file(dep, inst.service)
        return values

    def install_dir(self, service: str) -> PurePosixPath:
        """In an image: <install_root>/<service>; on a host: the cache's directory for the service's recipe."""
        if self.install_root:
            return self.install_root / service
        process = self.service(service).process
        return self.cache.install_dir(service, process.install if process else Install())

    @property
    def proxy_runtime(self) -> str:
        """The runtime API of the first proxy instance (the inventory's first host's; the only one on
        a single host): the one meshspec's tools read (chaos, the BDD steps, the benches)."""
        return self.proxy_runtime_of(self.instances_of(self.spec.proxy.service)[0])

    def proxy_runtime_of(self, proxy: Instance) -> str:
        """Where a proxy's HAProxy runtime API listens: a unix socket in its state dir that only its
        owner (the controller's user) may open; on TCP only when the spec gives the proxy a
        `runtime` port (anyone on the host can then disable servers through it)."""
        if "runtime" in proxy.ports:
            return f"{proxy.address}:{proxy.ports['runtime']}"
        return self.proxy_file(RUNTIME_SOCKET, proxy)

    @property
    def proxy_controller_user(self) -> str | None:
        """The user HAProxy gives its sockets to: the controller's program's (None: root's)."""
        name = self.spec.proxy.controller
        process = self.service(name).process if name and any(s.name == name for s in self.spec.services) else None
        return process.user if process else None

    def proxy_master_bind(self, proxy: Instance) -> str:
        """HAProxy's `-S` argument: its master CLI (reloads) on a unix socket in the proxy's state
        dir, mode 0600, the controller's user's."""
        user = self.proxy_controller_user
        return f"{self.proxy_file(MASTER_SOCKET, proxy)},mode,600" + (f",user,{user}" if user else "")

    def proxy_file(self, name: str, proxy: Instance | None = None) -> str:
        """A file of a proxy's own, in its instance's directory (by default the first proxy's)."""
        proxy = proxy or self.instances_of(self.spec.proxy.service)[0]
        return str(self.layout.instance_dir(proxy.id) / name)

    @property
    def registry_host(self) -> Host:
        """The host that keeps the management token and puts the mesh-wide state into the registry
        (program tokens, intentions): the embedded agent's, or with a real Consul the inventory's
        first. The others' deploys and verify read the token there; no other host keeps it."""
        consul = self.instances_of(self.spec.consul.service)
        return consul[0].host if consul else self.hosts[0]

    @property
    def rolling_order(self) -> list[Host]:
        """The hosts one at a time, as a rolling deploy takes them: the registry's first (the
        others' deploys read its management token and register with its agent), then the
        inventory's order."""
        return [self.registry_host, *(h for h in self.hosts if h != self.registry_host)]

    @property
    def consul_addr(self) -> str:
        """The registry's address as the deploying machine reaches it."""
        return self.external_consul or _host_port(self.instances_of(self.spec.consul.service)[0])

    def consul_addr_for(self, host: Host) -> str:
        """The registry's address as the programs of `host` reach it (a real Consul's is the same for
        every host: CONSUL_HTTP_ADDR names each host's own agent)."""
        if self.external_consul:
            return self.external_consul
        address, port = self.reach(self.spec.consul.service, host)
        return f"{address}:{port}"

    def render(self, inst: Instance, text: str, **more: object) -> str:
        """`text` with the instance's placeholders (and `more`, such as a probe's nonce) filled in."""
        return render(text, self.values_for(inst) | more)

    def render_once(self, service: str, text: str, **more: object) -> str:
        """`text` rendered once for the whole service (a backend's check path, a route through the
        proxy): its first instance's placeholders fill it."""
        return self.render(self.instances_of(service)[0], text, **more)


def _host_port(inst: Instance, port: int | None = None) -> str:
    return f"{inst.address}:{inst.port if port is None else port}"


def _replicas(service: Service, hosts: list[Host]) -> list[tuple[int, Host]]:
    """(replica, host) of each instance: replica r on the r-th host (round); a per-host service's
    one instance on each host, each replica 0 (its ports are the same on every host)."""
    if service.placement.per_host:
        return [(0, host) for host in hosts]
    return [(r, hosts[r % len(hosts)]) for r in range(service.replicas)]


def make_plan(
    spec: MeshSpec,
    hosts: list[Host],
    port_offset: int = 0,
    state_dir: str = "/srv/meshspec",
    meshspec_bin: str = "meshspec",
    external_consul: str | None = None,
    install_root: str | None = None,
    cache_dir: str = CACHE_DIR,
    meshspec_build: str = "",
) -> Plan:
    """Replica r of a service runs on the r-th (round) of the hosts its placement selects (every
    host, unless it names some), at port + r * replica_port_step + offset.

    With `external_consul` (a real Consul's address) the spec's consul service is not planned.
    `meshspec_bin` and `install_root` say where meshspec and the installs are where instances run
    (meshspec's own install in the install cache, or inside the docker runtime's images); without `install_root`,
    installs are in the host's install cache `cache_dir`, shared by every mesh of the host.
    """
    if not hosts:
        raise ValueError("a plan needs at least one host")
    port_of = spec.mesh.port_of
    on = {s.name: placed(hosts, s.placement.hosts, s.placement.spread or s.placement.per_host) for s in spec.services}
    instances = tuple(
        Instance(
            service=s.name,
            replica=r,
            host=host,
            port=port_of(s.port, r, port_offset),
            ports={name: port_of(p, r, port_offset) for name, p in s.ports.items()},
        )
        for s in spec.services
        if not (external_consul and s.name == spec.consul.service)
        for r, host in _replicas(s, on[s.name])
    )
    return Plan(spec, tuple(hosts), port_offset, Layout(PurePosixPath(state_dir)), meshspec_bin, instances,
                external_consul, PurePosixPath(install_root) if install_root else None, InstallCache(PurePosixPath(cache_dir)),
                meshspec_build)
