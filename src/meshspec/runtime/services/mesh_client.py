"""Reading the mesh from Consul and sending requests through it; shared by backend-api and task-worker.

A request to a service goes through the mesh proxy when one is configured (`/svc/<name>/<path>`,
the proxy strips the prefix) and otherwise straight to a passing instance found in Consul.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import ssl
import time
from typing import Any, Literal
from urllib.parse import unquote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator

SERVICE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_TIMEOUT_S = 120.0
# Not forwarded in either direction: they describe one hop, not the request.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
})
STATUS_ORDER = {"passing": 0, "warning": 1, "critical": 2}


class MeshError(Exception):
    """A request could not be delivered; `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str, route: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.route = route


# ----------------------------------------------------------------------------------- models --
class MeshRequest(BaseModel):
    """One HTTP request to a mesh service, addressed by service name."""

    model_config = ConfigDict(extra="forbid")

    service: str = Field(description="Consul service name")
    method: str = "GET"
    path: str = Field("/", description="path and query on the service, starting with /")
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | dict[str, Any] | list[Any] | None = Field(
        None, description="a string is sent as is; an object or array is sent as JSON")
    timeout_s: float = Field(10.0, gt=0, le=MAX_TIMEOUT_S)

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        if not SERVICE_NAME.match(value):
            raise ValueError("must be a service name (letters, digits, '-', '_', '.')")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value.upper() not in METHODS:
            raise ValueError(f"must be one of {', '.join(METHODS)}")
        return value.upper()

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in "\r\n\t #") or "\\" in value:
            raise ValueError("must start with '/' and contain no whitespace, '#' or '\\'")
        # A dot segment would climb out of the service's prefix (`/svc/web/../../mcp/other`, which
        # clients normalize before sending): the request would reach a service it does not name.
        segments = unquote(value.split("?", 1)[0]).split("/")
        if any(s in (".", "..") for s in segments):
            raise ValueError("must contain no '.' or '..' segment (plain or %-encoded)")
        return value


class Route(BaseModel):
    via: Literal["proxy", "consul"]
    url: str
    instance: str | None = None  # the Consul service ID when routed directly


class MeshResponse(BaseModel):
    status: int
    headers: dict[str, str]
    body: str
    body_encoding: Literal["utf-8", "base64"] = "utf-8"
    elapsed_ms: float
    route: Route


async def read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to `limit` bytes. One `read(limit)` returns what has arrived so far, which
    truncated a 4 kB answer that came in two segments (seen through the proxy's mTLS listener)."""
    chunks, size = [], 0
    while size < limit and (chunk := await content.read(limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# ----------------------------------------------------------------------------------- consul --
def consul_base_url(addr: str) -> str:
    """`host:port` (the spec's {consul.addr}) or a full URL → base URL without a trailing slash."""
    addr = addr.strip().rstrip("/")
    return addr if "://" in addr else f"http://{addr}"


class ConsulReader:
    """The few read-only Consul HTTP API calls the services need, over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, addr: str, token: str | None = None,
                 timeout_s: float = 5.0) -> None:
        self.session = session
        self.base = consul_base_url(addr)
        self.headers = {"X-Consul-Token": token} if token else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.acl_filtered = False  # whether the last catalog read was filtered by ACLs

    async def get(self, path: str, **params: str) -> Any:
        return (await self.get_with_headers(path, **params))[0]

    async def get_with_headers(self, path: str, **params: str) -> tuple[Any, Any]:
        async with self.session.get(f"{self.base}/v1/{path}", params=params, headers=self.headers,
                                    timeout=self.timeout) as resp:
            if resp.status != 200:
                text = (await resp.text())[:200]
                raise MeshError(502, f"consul answered {resp.status} to /v1/{path}: {text}")
            return await resp.json(content_type=None), resp.headers

    async def leader(self) -> str:
        return await self.get("status/leader")

    async def service_names(self) -> dict[str, list[str]]:
        names, headers = await self.get_with_headers("catalog/services")
        # ACLs hide what the token may not read: an anonymous or narrow token sees part of the mesh, or none.
        self.acl_filtered = headers.get("X-Consul-Results-Filtered-By-ACLs", "").lower() == "true"
        return names

    async def health_service(self, name: str, passing: bool = False) -> list[dict[str, Any]]:
        params = {"passing": "1"} if passing else {}
        return await self.get(f"health/service/{name}", **params)

    async def mesh(self, concurrency: int = 16) -> dict[str, list[dict[str, Any]]]:
        """Every service with its health entries (Node, Service, Checks), fetched concurrently."""
        names = sorted(await self.service_names())
        gate = asyncio.Semaphore(concurrency)

        async def one(name: str) -> list[dict[str, Any]]:
            async with gate:
                return await self.health_service(name)

        entries = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, entries))


def instance_status(checks: list[dict[str, Any]]) -> str:
    """The worst status among an instance's checks (node checks included); no checks is passing, as in Consul."""
    statuses = [c.get("Status", "critical") for c in checks] or ["passing"]
    return max(statuses, key=lambda s: STATUS_ORDER.get(s, 2))


def describe_instance(entry: dict[str, Any]) -> dict[str, Any]:
    svc, node = entry.get("Service") or {}, entry.get("Node") or {}
    checks = entry.get("Checks") or []
    return {
        "id": svc.get("ID"),
        "address": svc.get("Address") or node.get("Address"),
        "port": svc.get("Port"),
        "node": node.get("Node"),
        # The deploy's Meta names the instance's host: with one registry for many hosts every
        # instance is registered through the registry's node, so Node alone would name that one.
        "host": (svc.get("Meta") or {}).get("host") or node.get("Node"),
        "status": instance_status(checks),
        "tags": svc.get("Tags") or [],
        "meta": svc.get("Meta") or {},
        "checks": [
            {"id": c.get("CheckID"), "name": c.get("Name"), "status": c.get("Status"),
             "output": c.get("Output") or ""}
            for c in checks
        ],
    }


# ---------------------------------------------------------------------------------- routing --
class MeshRouter:
    """Sends MeshRequests: via the proxy when `proxy_url` is set, else to a passing Consul instance.
    `tls`: what the proxy's mTLS listener (an https `proxy_url`) is called with: the service's mesh
    identity (identity.MeshIdentity.context)."""

    def __init__(self, session: aiohttp.ClientSession, consul: ConsulReader | None,
                 proxy_url: str | None = None, max_body: int = 4 * 1024 * 1024, tls: ssl.SSLContext | None = None) -> None:
        self.session = session
        self.tls = tls
        self.consul = consul
        self.proxy_url = proxy_url.rstrip("/") if proxy_url else None
        self.max_body = max_body
        self._turn = itertools.count()

    async def route(self, req: MeshRequest) -> Route:
        if self.proxy_url:
            return Route(via="proxy", url=f"{self.proxy_url}/svc/{req.service}{req.path}")
        if self.consul is None:
            raise MeshError(503, "no proxy URL and no Consul address configured")
        try:
            entries = await self.consul.health_service(req.service, passing=True)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise MeshError(503, f"consul unreachable: {exc.__class__.__name__}: {exc}") from None
        if not entries:
            raise MeshError(503, f"no passing instance of service {req.service!r} in Consul")
        entry = entries[next(self._turn) % len(entries)]  # round robin across calls
        inst = describe_instance(entry)
        host = inst["address"]
        host = f"[{host}]" if ":" in host else host
        return Route(via="consul", url=f"http://{host}:{inst['port']}{req.path}", instance=inst["id"])

    async def send(self, req: MeshRequest) -> MeshResponse:
        route = await self.route(req)
        headers = {k: v for k, v in req.headers.items() if k.lower() not in HOP_BY_HOP}
        data: bytes | None = None
        if isinstance(req.body, str):
            data = req.body.encode()
        elif req.body is not None:
            data = json.dumps(req.body).encode()
            headers.setdefault("Content-Type", "application/json")
        started = time.perf_counter()
        try:
            async with self.session.request(
                req.method, route.url, headers=headers, data=data, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=req.timeout_s), **({"ssl": self.tls} if self.tls else {}),
            ) as resp:
                raw = await read_at_most(resp.content, self.max_body + 1)
                if len(raw) > self.max_body:
                    raise MeshError(502, f"response body larger than {self.max_body} bytes", route.model_dump())
                status, resp_headers = resp.status, {
                    k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
        except asyncio.TimeoutError:
            raise MeshError(504, f"no answer from {req.service} within {req.timeout_s}s", route.model_dump()) from None
        except aiohttp.ClientError as exc:
            raise MeshError(502, f"{req.service} unreachable: {exc.__class__.__name__}: {exc}", route.model_dump()) from None
        elapsed = (time.perf_counter() - started) * 1000
        try:
            body, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(raw).decode(), "base64"
        return MeshResponse(status=status, headers=resp_headers, body=body, body_encoding=encoding,
                            elapsed_ms=round(elapsed, 2), route=route)
