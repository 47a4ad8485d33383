"""`meshspec serve mcp-gateway`: one MCP endpoint federating the tools of the mesh's MCP servers.

Discovery: the gateway asks Consul (py-consul) for every service, keeps those whose registrations
carry ``Meta.kind == "mcp"`` and have at least one *passing* instance (``health/service/<name>?passing``),
and watches for changes with a blocking query on ``health/state/any`` (which moves whenever a check
is added, removed or changes status), re-reading at least every ``refresh`` seconds.

Catalogue: ``tools/list`` answers the union of the upstreams' tools, each named ``<service>.<tool>``
with its description, input schema (and output schema, annotations) passed through. An upstream's
tools are listed when it appears, when its instances change, and every ``TOOLS_TTL_S`` seconds.

Calls: ``tools/call <service>.<tool>`` is forwarded to the owning service — through the mesh proxy at
``{proxy}/mcp/<service>`` when ``--proxy`` is given, else straight to one of its passing instances.
The gateway holds one MCP client session (official SDK, initialize handshake, so servers speaking
2024-11-05 are accepted) per upstream, reuses it for every call, and re-opens it once when it fails.
The upstream's result (including ``isError`` tool errors) is passed back unchanged; an upstream that
cannot be reached gives a tool error naming it. Upstreams that fail are skipped and logged; they
never bring the gateway down.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
import consul
import httpx2
import typer
import uvicorn
from anyio.abc import TaskGroup
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.server.lowlevel.server import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    Implementation,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
)

from meshspec.common.consul_token import read_token
from meshspec.runtime.services.identity import MeshIdentity, mesh_identity

log = logging.getLogger("meshspec.mcp_gateway")

MCP_KIND = "mcp"
SEPARATOR = "."
#: The gateway's own tool: the upstreams it federates and their state (it also keeps a gateway
#: without upstreams a passing MCP server for `meshspec probe mcp`, which wants at least one tool).
UPSTREAMS_TOOL = "mcp-gateway.upstreams"
#: Longest a blocking query on Consul waits before the catalogue is re-read anyway. The query wakes
#: on every change of a check's status, so this is only a safety net: each re-read costs a request
#: per MCP service, which on an idle mesh was most of the gateway's CPU at 10 s.
DEFAULT_REFRESH_S = 60.0
#: An upstream's tools are listed again at least this often. A restarted upstream is re-listed at
#: once (its instances change in Consul); this catches tools that change while it runs. Listing
#: claude-flow's 353 tools costs both sides tens of ms, so not every minute.
TOOLS_TTL_S = 300.0
CONNECT_TIMEOUT_S = 10.0
LIST_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 300.0
#: After a failure, an upstream is not tried again for this long (calls still try at once).
RETRY_AFTER_S = 5.0
CLIENT_INFO = Implementation(name="meshspec-mcp-gateway", version="1")


def upstream_tool_name(service: str, tool: str) -> str:
    return f"{service}{SEPARATOR}{tool}"


# --------------------------------------------------------------------------------------------------
# Upstream sessions


# The SDK's own HTTP client timeouts (create_mcp_http_client): 30 s, and 300 s to read a held stream.
MCP_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


class UpstreamSession:
    """One long-lived MCP client session to ``url``, owned by a task in the gateway's task group.

    The SDK's client is an async context manager whose transport runs its own task group, so the
    session lives inside a dedicated owner task; calls from request handlers go through it.
    """

    def __init__(self, url: str, tasks: TaskGroup, tls: ssl.SSLContext | None = None) -> None:
        self.url = url
        self._tasks = tasks
        self.tls = tls  # the gateway's mesh identity, for the proxy's mTLS listener
        self._client: Client | None = None
        self._close: anyio.Event | None = None
        self._lock = anyio.Lock()

    async def client(self) -> Client:
        async with self._lock:
            if self._client is not None:
                return self._client
            ready = anyio.Event()
            close = anyio.Event()
            box: dict[str, Any] = {}
            self._tasks.start_soon(self._own, ready, close, box, name=f"mcp-upstream {self.url}")
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                await ready.wait()
            if "error" in box:
                raise box["error"]
            self._client, self._close = box["client"], close
            return self._client

    async def _own(self, ready: anyio.Event, close: anyio.Event, box: dict[str, Any]) -> None:
        client: Client | None = None
        try:
            async with AsyncExitStack() as stack:
                server: Any = self.url
                if self.tls:  # the proxy's mTLS listener: the SDK's transport over a client that presents the identity
                    http = await stack.enter_async_context(httpx2.AsyncClient(verify=self.tls, timeout=MCP_HTTP_TIMEOUT))
                    server = streamable_http_client(self.url, http_client=http)
                client = Client(server, mode="legacy", cache=None, client_info=CLIENT_INFO,
                                read_timeout_seconds=CALL_TIMEOUT_S)
                await stack.enter_async_context(client)
                box["client"] = client
                ready.set()
                await close.wait()
        except Exception as err:  # a broken session must never take the gateway down
            if not ready.is_set():
                box["error"] = err
            else:
                log.info("session to %s ended: %s", self.url, _describe(err))
        finally:
            ready.set()
            if self._client is client and client is not None:
                self._client = None

    def reset(self) -> None:
        """Drop the session (the owner task ends it with a DELETE); the next call opens a new one."""
        if self._close is not None:
            self._close.set()
        self._client, self._close = None, None

    async def _twice(self, action):
        """Run ``action(client)``; when the session turns out to be broken, re-open it once and retry.

        A timeout is not retried (the upstream may still be working on the call), nor is an answer
        of the upstream's own (a JSON-RPC error other than a lost session).
        """
        for attempt in (1, 2):
            try:
                return await action(await self.client())
            except TimeoutError:
                self.reset()
                raise
            except MCPError as err:
                if attempt == 2 or not _session_lost(err):
                    raise
            except Exception:
                if attempt == 2:
                    self.reset()
                    raise
            log.info("re-opening the session to %s", self.url)
            self.reset()
        raise AssertionError("unreachable")

    async def list_tools(self) -> list[Tool]:
        async def action(client: Client) -> list[Tool]:
            tools: list[Tool] = []
            cursor: str | None = None
            for _ in range(100):
                with anyio.fail_after(LIST_TIMEOUT_S):
                    page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
            return tools

        return await self._twice(action)

    async def call_tool(self, tool: str, arguments: dict[str, Any] | None) -> CallToolResult:
        async def action(client: Client) -> CallToolResult:
            return await client.session.call_tool(tool, arguments)

        return await self._twice(action)


def _session_lost(err: MCPError) -> bool:
    text = str(err).lower()
    return "session" in text or "404" in text or "terminated" in text or "closed" in text


def _describe(err: BaseException) -> str:
    if isinstance(err, BaseExceptionGroup) and err.exceptions:
        return _describe(err.exceptions[0])
    return " ".join(str(err).split()) or type(err).__name__


# --------------------------------------------------------------------------------------------------
# The catalogue


@dataclass
class Upstream:
    service: str
    instances: tuple[tuple[str, int], ...]
    url: str
    session: UpstreamSession
    tools: list[Tool] = field(default_factory=list)
    listed_at: float = 0.0
    failed_at: float = 0.0
    error: str | None = None


class Gateway:
    """Discovery, tool catalogue and call forwarding; ``run`` is the watch loop."""

    def __init__(self, consul_client: consul.Consul, proxy: str | None = None,
                 refresh_s: float = DEFAULT_REFRESH_S, identity: MeshIdentity | None = None) -> None:
        self.consul = consul_client
        self.proxy = proxy.rstrip("/") if proxy else None
        self.identity = identity  # presented to an mTLS proxy
        self.refresh_s = refresh_s
        self.upstreams: dict[str, Upstream] = {}
        self.tasks: TaskGroup | None = None
        self.changed = anyio.Event()

    # --- discovery --------------------------------------------------------------------------------

    def discover(self) -> dict[str, tuple[tuple[str, int], ...]]:
        """{service: passing (address, port) of its kind=mcp registrations}, read from Consul (blocking I/O)."""
        _, services = self.consul.catalog.services()
        found: dict[str, tuple[tuple[str, int], ...]] = {}
        for name in sorted(services):
            _, entries = self.consul.health.service(name, passing=True)
            instances = set()
            for entry in entries or []:
                service = entry.get("Service") or {}
                meta = service.get("Meta") or {}
                if meta.get("kind") != MCP_KIND:
                    continue
                address = service.get("Address") or (entry.get("Node") or {}).get("Address")
                port = service.get("Port")
                if address and port:
                    instances.add((str(address), int(port)))
            if instances:
                found[name] = tuple(sorted(instances))
        return found

    def _url(self, service: str, instances: tuple[tuple[str, int], ...]) -> str:
        if self.proxy:
            return f"{self.proxy}/mcp/{service}"
        address, port = instances[0]
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{port}/mcp"

    async def apply(self, found: dict[str, tuple[tuple[str, int], ...]]) -> None:
        """Bring ``upstreams`` in line with what discovery found, then list tools where needed."""
        assert self.tasks is not None
        for name in list(self.upstreams):
            if name not in found:
                log.warning("upstream %s left the catalogue (no passing kind=mcp instance)", name)
                self.upstreams.pop(name).session.reset()
        for name, instances in found.items():
            current = self.upstreams.get(name)
            if current is not None and current.instances == instances:
                continue
            url = self._url(name, instances)
            if current is not None and current.url == url:
                current.instances = instances  # the proxy spreads the new set itself
                current.listed_at = 0.0
                continue
            if current is not None:
                current.session.reset()
            log.info("upstream %s at %s", name, url)
            self.upstreams[name] = Upstream(name, instances, url, UpstreamSession(url, self.tasks, self.identity.context if self.identity else None),
                                            tools=current.tools if current else [])
        await self.list_all()

    async def list_all(self) -> None:
        """Re-list the tools of every upstream that is new, stale, or failed a while ago; concurrently."""
        now = time.monotonic()
        due = [u for u in self.upstreams.values()
               if now - u.listed_at > TOOLS_TTL_S and now - u.failed_at > RETRY_AFTER_S]
        if not due:
            return
        async with anyio.create_task_group() as group:
            for upstream in due:
                group.start_soon(self._list, upstream)

    async def _list(self, upstream: Upstream) -> None:
        try:
            tools = await upstream.session.list_tools()
        except Exception as err:
            reason = _describe(err)
            if upstream.error != reason:
                log.warning("skipping upstream %s (%s): tools/list failed: %s", upstream.service, upstream.url, reason)
            upstream.error, upstream.failed_at, upstream.tools = reason, time.monotonic(), []
            upstream.session.reset()
            return
        if upstream.error or not upstream.listed_at:
            log.info("upstream %s lists %d tools", upstream.service, len(tools))
        upstream.tools, upstream.listed_at, upstream.error = tools, time.monotonic(), None

    async def run(self, tasks: TaskGroup) -> None:
        """The watch loop: discover, apply, wait for a change (blocking query) or the refresh interval."""
        self.tasks = tasks
        index: str | None = None
        wait = f"{max(int(self.refresh_s * 1000), 100)}ms"
        while True:
            try:
                if index is None:  # read the index first: a change after it wakes the blocking query below
                    index, _ = await anyio.to_thread.run_sync(lambda: self.consul.health.state("any"),
                                                              abandon_on_cancel=True)
                found = await anyio.to_thread.run_sync(self.discover, abandon_on_cancel=True)
                await self.apply(found)
                started = time.monotonic()
                new_index, _ = await anyio.to_thread.run_sync(
                    lambda: self.consul.health.state("any", index=index, wait=wait), abandon_on_cancel=True)
                if new_index == index and time.monotonic() - started < 0.05:
                    await anyio.sleep(0.05)  # an agent that does not block must not make us spin
                index = new_index
            except Exception as err:
                log.warning("catalogue refresh from Consul failed: %s", _describe(err))
                index = None
                await anyio.sleep(min(self.refresh_s, RETRY_AFTER_S))

    # --- the MCP surface --------------------------------------------------------------------------

    def catalogue(self) -> dict[str, tuple[Upstream, Tool]]:
        listed: dict[str, tuple[Upstream, Tool]] = {}
        for service in sorted(self.upstreams):
            upstream = self.upstreams[service]
            for tool in upstream.tools:
                listed[upstream_tool_name(service, tool.name)] = (upstream, tool)
        return listed

    def list_tools(self) -> list[Tool]:
        tools = [Tool(name=UPSTREAMS_TOOL,
                      description="The MCP services this gateway federates: URL, instances, tool count, last error.",
                      input_schema={"type": "object", "properties": {}})]
        for name, (upstream, tool) in self.catalogue().items():
            description = tool.description or ""
            tools.append(tool.model_copy(update={"name": name, "description": description or f"{tool.name} on {upstream.service}"}))
        return tools

    def input_schema(self, name: str) -> dict[str, Any] | None:
        entry = self.catalogue().get(name)
        return None if entry is None else entry[1].input_schema

    def describe_upstreams(self) -> dict[str, Any]:
        return {"upstreams": [
            {"service": u.service, "url": u.url, "instances": [f"{a}:{p}" for a, p in u.instances],
             "tools": len(u.tools), "error": u.error}
            for u in sorted(self.upstreams.values(), key=lambda u: u.service)
        ], "proxy": self.proxy}

    async def call_tool(self, name: str, arguments: dict[str, Any] | None) -> CallToolResult:
        if name == UPSTREAMS_TOOL:
            described = self.describe_upstreams()
            return CallToolResult(content=[TextContent(type="text", text=json.dumps(described, indent=2))],
                                  structured_content=described)
        entry = self.catalogue().get(name)
        if entry is None:
            service = name.split(SEPARATOR, 1)[0] if SEPARATOR in name else None
            if service and service in self.upstreams and self.upstreams[service].error:
                return _error(f"upstream {service} is unavailable: {self.upstreams[service].error}")
            return _error(f"unknown tool {name!r}: tools are named <service>{SEPARATOR}<tool>; see tools/list")
        upstream, tool = entry
        try:
            result = await upstream.session.call_tool(tool.name, arguments)
        except MCPError as err:
            return _error(f"{upstream.service} rejected {tool.name}: {_describe(err)}")
        except Exception as err:
            log.warning("call %s on %s (%s) failed: %s", tool.name, upstream.service, upstream.url, _describe(err))
            upstream.session.reset()
            return _error(f"upstream {upstream.service} failed: {_describe(err)}")
        return result


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def build_server(gateway: Gateway) -> Server:
    async def on_list_tools(ctx: ServerRequestContext, params: PaginatedRequestParams | None) -> ListToolsResult:
        return ListToolsResult(tools=gateway.list_tools())

    async def on_call_tool(ctx: ServerRequestContext, params: CallToolRequestParams) -> CallToolResult:
        return await gateway.call_tool(params.name, params.arguments)

    return Server(
        "meshspec-mcp-gateway",
        version="1",
        instructions="Tools of every MCP server in the mesh, named <service>.<tool>.",
        get_tool_input_schema=gateway.input_schema,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


async def serve(gateway: Gateway, host: str, port: int) -> None:
    """The HTTP server and the watch loop in one task group; ends when uvicorn does (SIGTERM/SIGINT)."""
    app = build_server(gateway).streamable_http_app(streamable_http_path="/mcp", host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    if gateway.identity:
        gateway.identity.start()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(gateway.run, tasks, name="catalogue watch")
        await server.serve()
        tasks.cancel_scope.cancel()
    if gateway.identity:
        await gateway.identity.close()


def consul_client(address: str, token: str | None) -> consul.Consul:
    """A py-consul client for ``host:port`` or ``http(s)://host:port``."""
    scheme = "http"
    if "://" in address:
        scheme, address = address.split("://", 1)
    address = address.rstrip("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"--consul {address!r}: expected HOST:PORT")
    return consul.Consul(host=host.strip("[]"), port=int(port), scheme=scheme, token=token)


def token_from(token_file: Path | None) -> str | None:
    try:
        return read_token(token_file)
    except OSError as err:
        raise typer.BadParameter(f"--token-file {token_file}: {err.strerror}") from None


def mcp_gateway_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    consul: Annotated[str, typer.Option(help="Consul HTTP address, HOST:PORT.", envvar="CONSUL_HTTP_ADDR")]
    = "127.0.0.1:8500",
    token_file: Annotated[Path | None, typer.Option(help="File holding the Consul ACL token "
                                                         "(default: $CONSUL_HTTP_TOKEN).")] = None,
    proxy: Annotated[str | None, typer.Option(help="Mesh proxy base URL; calls go to {proxy}/mcp/<service>. "
                                                   "Without it, straight to a passing instance.")] = None,
    refresh: Annotated[float, typer.Option(help="Seconds a Consul watch waits before re-reading anyway.")]
    = DEFAULT_REFRESH_S,
    service: Annotated[str | None, typer.Option(help="The service whose certificate it presents to an https "
                                                     "(mTLS) --proxy.", envvar="MESH_SERVICE")] = None,
) -> None:
    """Serve one MCP endpoint on http://HOST:PORT/mcp federating the mesh's MCP tools as <service>.<tool>."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "mcp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    token = token_from(token_file)
    try:
        identity = mesh_identity(consul, token, service, proxy)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    gateway = Gateway(consul_client(consul, token), proxy=proxy, refresh_s=refresh, identity=identity)
    anyio.run(serve, gateway, host, port)


if __name__ == "__main__":  # pragma: no cover
    typer.run(mcp_gateway_command)
