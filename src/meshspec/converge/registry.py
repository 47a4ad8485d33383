"""Where the mesh's Consul is: the embedded agent of the plan, or a real one (CONSUL_HTTP_ADDR)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import consul


@dataclass(frozen=True)
class Registry:
    host: str
    port: int
    scheme: str = "http"
    embedded: bool = True

    @classmethod
    def from_addr(cls, addr: str, embedded: bool) -> Registry:
        """'127.0.0.1:8500' or 'https://consul.example:8501', as CONSUL_HTTP_ADDR takes it."""
        parts = urlsplit(addr if "://" in addr else f"http://{addr}")
        return cls(parts.hostname or "127.0.0.1", parts.port or 8500, parts.scheme, embedded)

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self, token: str | None, timeout: float = 10) -> consul.Consul:
        return consul.Consul(host=self.host, port=self.port, scheme=self.scheme, token=token, connections_timeout=timeout)
