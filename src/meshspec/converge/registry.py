"""Where the mesh's Consul is: the embedded agent of the plan, or a real one (CONSUL_HTTP_ADDR); and
whether the deploy reaches it through a host's SSH connection (`through`, converge.forward)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import consul

from meshspec.plan import Plan


@dataclass(frozen=True)
class Registry:
    host: str
    port: int
    scheme: str = "http"
    embedded: bool = True
    through: str | None = None  # the inventory's host whose SSH connection carries each connection; None: direct

    @classmethod
    def from_addr(cls, addr: str, embedded: bool, through: str | None = None) -> Registry:
        """'127.0.0.1:8500' or 'https://consul.example:8501', as CONSUL_HTTP_ADDR takes it."""
        parts = urlsplit(addr if "://" in addr else f"http://{addr}")
        return cls(parts.hostname or "127.0.0.1", parts.port or 8500, parts.scheme, embedded, through)

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def where(self) -> str:
        """Its address, and the host through which the deploy reaches it, for messages."""
        return self.addr + (f" (as {self.through} reaches it, over SSH)" if self.through else "")

    def client(self, token: str | None, timeout: float = 10) -> consul.Consul:
        host, port = self.host, self.port
        if self.through:  # only inside a pyinfra run
            from meshspec.converge.forward import local_end
            host, port = local_end(self.through, self.host, self.port)
        return consul.Consul(host=host, port=port, scheme=self.scheme, token=token, connections_timeout=timeout)


def agent_of(plan: Plan, host_name: str, deployer_s: Registry) -> Registry:
    """The Consul agent through which the deploy registers a host's instances and reads their checks:
    the one that host's programs and checker use (`Plan.consul_addr_for`: with a real Consul, the
    host's own agent at CONSUL_HTTP_ADDR), reached through the host's SSH connection as the host
    reaches it. On this machine, the agent the deploying machine reaches."""
    here = next(h for h in plan.hosts if h.name == host_name)
    if here.is_local:
        return deployer_s
    return Registry.from_addr(plan.consul_addr_for(here), embedded=deployer_s.embedded, through=host_name)
