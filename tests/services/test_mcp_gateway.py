"""`meshspec serve mcp-gateway` against a real agent and two real MCP servers, all subprocesses.

The upstreams are registered as meshspec registers them: Meta kind=mcp, managed-by, mesh, and a
script check running `meshspec probe mcp URL`. The gateway must list their tools as <service>.<tool>,
forward calls, drop what leaves the catalogue, and survive an upstream restart.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from consul import Check
from mcp import Client

from meshspec.runtime.probes.mcp import probe_mcp
from tests.agent.conftest import MESHSPEC, AgentProcess, free_port, wait_until
from tests.services.mcp_support import (  # noqa: F401  (fixtures)
    TASK_RUNNER_ARGS,
    Origin,
    call,
    list_tools,
    origin,
    start_mcp_server,
    structured,
    text_of,
)

pytestmark = pytest.mark.integration
TOKEN = "gateway-test-management-token"
MESH = "gw-test"


def register(client, name: str, port: int, kind: str = "mcp", instance: int = 1, ttl: bool = False) -> str:
    """Register as meshspec does (check: `meshspec probe mcp URL`), or with a passing TTL check."""
    url = f"http://127.0.0.1:{port}/mcp"
    service_id = f"{name}-{instance}"
    check = Check.ttl("600s") if ttl else Check.script([str(MESHSPEC), "probe", "mcp", url], "1s")
    client.agent.service.register(
        name, service_id=service_id, address="127.0.0.1", port=port, tags=[kind],
        meta={"kind": kind, "managed-by": "meshspec", "mesh": MESH}, check=check)
    if ttl:
        client.agent.check.ttl_pass(f"service:{service_id}")
    return service_id


def passing(client, name: str) -> bool:
    return bool(client.health.service(name, passing=True)[1])


def tool_names(url: str) -> set[str]:
    return {t.name for t in list_tools(url)}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path / "agent", token=TOKEN, extra=["--enable-script-checks"]).start()
    yield proc
    proc.stop()


@pytest.fixture
def mesh(agent, start_mcp_server, tmp_path: Path):
    """Agent + http + claude-task-runner registered and passing + the gateway (direct mode)."""
    client = agent.client(token=TOKEN)
    http = start_mcp_server("mcp-http", wait=False)
    runner = start_mcp_server("mcp-task-runner", ["--data-dir", str(tmp_path / "runner"), *TASK_RUNNER_ARGS], wait=False)
    http.wait_ready(), runner.wait_ready()
    register(client, "http", http.port)
    register(client, "claude-task-runner", runner.port)
    wait_until(lambda: passing(client, "http") and passing(client, "claude-task-runner"), 15)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    gateway = start_mcp_server("mcp-gateway", ["--consul", agent.address, "--token-file", str(token_file),
                                               "--refresh", "2"])
    return client, http, runner, gateway


def test_gateway_federates_forwards_and_follows_the_catalogue(mesh, origin: Origin, start_mcp_server):
    client, http, runner, gateway = mesh
    # a service that is not kind=mcp and an mcp service whose check fails are both left out
    register(client, "backend-like", http.port, kind="core")
    register(client, "dead-mcp", free_port())

    names = wait_until(lambda: (n := tool_names(gateway.url)) >= {"http.http_request", "claude-task-runner.submit_task"}
                       and n, 15)
    assert names == {"mcp-gateway.upstreams", "http.http_request", "http.http_get",
                     "claude-task-runner.submit_task", "claude-task-runner.task_status",
                     "claude-task-runner.task_output", "claude-task-runner.list_tasks",
                     "claude-task-runner.cancel_task"}

    # description and input schema pass through unchanged
    direct = {t.name: t for t in list_tools(http.url)}
    federated = {t.name: t for t in list_tools(gateway.url)}
    assert federated["http.http_request"].input_schema == direct["http_request"].input_schema
    assert federated["http.http_request"].description == direct["http_request"].description

    # the health check of the gateway itself passes (a real handshake)
    assert probe_mcp(gateway.url).ok

    # calls are forwarded and answer the upstream's result
    via = structured(call(gateway.url, "http.http_request", {"url": f"{origin.base}/text"}))
    straight = structured(call(http.url, "http_request", {"url": f"{origin.base}/text"}))
    assert (via["status"], via["body"], via["headers"]["x-origin"]) == (straight["status"], straight["body"], "yes")

    task = structured(call(gateway.url, "claude-task-runner.submit_task",
                           {"command": ["python3", "-c", "print('via gateway')"]}))
    wait_until(lambda: structured(call(gateway.url, "claude-task-runner.task_status", task))["state"] == "succeeded", 10)
    assert structured(call(runner.url, "task_output", task))["stdout"] == "via gateway\n"

    # an upstream's tool error comes back as that tool error
    refused = call(gateway.url, "http.http_request", {"url": f"http://127.0.0.1:{free_port()}/"})
    assert refused.is_error and "connection refused" in text_of(refused)
    unknown = call(gateway.url, "http.nope", {})
    assert unknown.is_error and "unknown tool 'http.nope'" in text_of(unknown)

    upstreams = structured(call(gateway.url, "mcp-gateway.upstreams"))["upstreams"]
    assert [(u["service"], u["url"], u["error"]) for u in upstreams] == [
        ("claude-task-runner", runner.url, None), ("http", http.url, None)]

    # deregistering a service removes its tools
    client.agent.service.deregister("http-1")
    wait_until(lambda: not any(n.startswith("http.") for n in tool_names(gateway.url)), 10)
    assert "claude-task-runner.submit_task" in tool_names(gateway.url)
    gone = call(gateway.url, "http.http_get", {"url": f"{origin.base}/text"})
    assert gone.is_error and "unknown tool" in text_of(gone)

    # ... and registering it again brings them back
    register(client, "http", http.port)
    wait_until(lambda: "http.http_get" in tool_names(gateway.url), 15)
    assert gateway.proc.poll() is None


def test_upstream_restart_reopens_the_session(mesh, tmp_path: Path):
    client, http, runner, gateway = mesh
    # a TTL check that stays passing: the restart must not make the service leave the catalogue,
    # so the gateway keeps its Upstream and has to re-open the session it holds
    register(client, "claude-task-runner", runner.port, ttl=True)
    wait_until(lambda: "claude-task-runner.list_tasks" in tool_names(gateway.url), 15)

    async def scenario() -> tuple[dict, dict]:
        # one client session to the gateway across the upstream's restart
        async with Client(gateway.url, mode="legacy", cache=None) as session:
            before = structured(await session.call_tool("claude-task-runner.list_tasks", {}))
            runner.stop()
            runner.start()  # same port and data dir: the gateway's upstream session is now unknown there
            after = structured(await session.call_tool("claude-task-runner.list_tasks", {}))
            return before, after

    before, after = asyncio.run(scenario())
    assert before == after
    assert gateway.proc.poll() is None
    assert "re-opening the session" in gateway.log()


def test_failing_upstream_is_skipped_and_the_gateway_survives(agent, start_mcp_server, tmp_path: Path):
    client = agent.client(token=TOKEN)
    http = start_mcp_server("mcp-http")
    register(client, "http", http.port)
    wait_until(lambda: passing(client, "http"), 15)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    gateway = start_mcp_server("mcp-gateway", ["--consul", agent.address, "--token-file", str(token_file),
                                               "--refresh", "1"])
    wait_until(lambda: "http.http_get" in tool_names(gateway.url), 15)

    http.stop(9)  # the instance dies; its check goes critical, then the service leaves the catalogue
    failed = call(gateway.url, "http.http_get", {"url": "http://127.0.0.1:1/"})
    assert failed.is_error  # either the forward failed or the tool is already gone: never a crash
    wait_until(lambda: "http.http_get" not in tool_names(gateway.url), 15)
    assert probe_mcp(gateway.url).ok
    assert gateway.proc.poll() is None


class MeshProxy:
    """A stand-in for the mesh proxy's MCP routes: /mcp/<service> → an instance's /mcp, headers kept."""

    def __init__(self, routes: dict[str, str]) -> None:
        self.routes = routes
        self.port = free_port()
        self.hits: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._loop = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        service = request.match_info["service"]
        if service not in self.routes:
            return web.Response(status=503, text="no route")
        self.hits[service] = self.hits.get(service, 0) + 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(request.method, self.routes[service], headers=headers,
                                       data=await request.read()) as upstream:
                response = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")})
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response

    def start(self) -> MeshProxy:
        import threading

        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/mcp/{service}", self.handle)
            self._runner = web.AppRunner(app, shutdown_timeout=1.0)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=serve, daemon=True).start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        if self._loop:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(15)
            self._loop.call_soon_threadsafe(self._loop.stop)


def test_proxy_mode_forwards_through_the_mesh_proxy(agent, start_mcp_server, origin: Origin, tmp_path: Path):
    client = agent.client(token=TOKEN)
    http = start_mcp_server("mcp-http")
    register(client, "http", http.port)
    wait_until(lambda: passing(client, "http"), 15)
    proxy = MeshProxy({"http": http.url}).start()
    try:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        gateway = start_mcp_server("mcp-gateway", ["--consul", agent.address, "--token-file", str(token_file),
                                                   "--proxy", proxy.url])
        wait_until(lambda: "http.http_request" in tool_names(gateway.url), 15)
        answer = structured(call(gateway.url, "http.http_get", {"url": f"{origin.base}/text"}))
        assert answer["body"] == "héllo from origin"
        assert proxy.hits["http"] >= 3  # initialize, initialized, tools/list, tools/call all went through it
        upstreams = structured(call(gateway.url, "mcp-gateway.upstreams"))
        assert upstreams["upstreams"][0]["url"] == f"{proxy.url}/mcp/http"
        gateway.stop()  # before the proxy: the gateway holds a session stream through it
    finally:
        proxy.stop()


def test_latency_through_the_gateway_vs_direct(mesh, origin: Origin, record_property):
    """Median of 50 tools/call (task_status of a finished task), one reused session each way."""
    client, http, runner, gateway = mesh
    wait_until(lambda: "claude-task-runner.task_status" in tool_names(gateway.url), 15)
    task = structured(call(runner.url, "submit_task", {"command": ["true"]}))

    async def median_ms(url: str, tool: str, n: int = 50) -> float:
        async with Client(url, mode="legacy", cache=None) as session:
            await session.call_tool(tool, task)  # warm: the gateway opens its upstream session here
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                result = await session.call_tool(tool, task)
                samples.append((time.perf_counter() - started) * 1000)
                assert not result.is_error
            return statistics.median(samples)

    direct = asyncio.run(median_ms(runner.url, "task_status"))
    via = asyncio.run(median_ms(gateway.url, "claude-task-runner.task_status"))
    record_property("direct_ms", round(direct, 2))
    record_property("gateway_ms", round(via, 2))
    print(f"\ntools/call median of 50: direct {direct:.2f} ms, through the gateway {via:.2f} ms "
          f"(+{via - direct:.2f} ms, {via / direct:.2f}x)")
    assert via < direct + 100
