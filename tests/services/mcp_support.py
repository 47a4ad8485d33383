"""Helpers for the tests of meshspec's own MCP servers (mcp-http, mcp-task-runner, mcp-gateway).

Each server runs as a real subprocess on a free 127.0.0.1 port, started through its Typer command as
`meshspec serve <name>` will run it, and is driven with the official MCP SDK client. Test modules
import the fixtures they use (`start_mcp_server`, `origin`) from here.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult

from meshspec.runtime.probes.mcp import McpResult, probe_mcp
from tests.agent.conftest import free_port, wait_until

PYTHON = Path(sys.executable).parent / "python"
READY_TIMEOUT = 20.0

#: How the tests start the task runner: as root (these tests run as root; the mesh runs it as its own
#: user) and allowed only what the tests run, including two programs that do not exist.
TASK_RUNNER_ARGS = ["--allow-root", *(a for program in ("python3", "echo", "true", "definitely-not-a-program-xyz",
                                                        "/nonexistent/bin/tool") for a in ("--allow", program))]

#: module:function of each server's Typer command.
COMMANDS = {
    "mcp-http": "meshspec.runtime.services.mcp_http:mcp_http_command",
    "mcp-task-runner": "meshspec.runtime.services.mcp_task_runner:mcp_task_runner_command",
    "mcp-gateway": "meshspec.runtime.services.mcp_gateway:mcp_gateway_command",
}


class ServerProcess:
    """One of meshspec's MCP servers as a subprocess; restartable on the same port."""

    def __init__(self, name: str, log_dir: Path, args: list[str] | None = None, port: int | None = None) -> None:
        self.name = name
        self.args = args or []
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = log_dir / f"{name}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, wait: bool = True) -> ServerProcess:
        module, function = COMMANDS[self.name].split(":")
        code = f"import typer; from {module} import {function}; typer.run({function})"
        cmd = [str(PYTHON), "-c", code, "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CONSUL_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self.wait_ready() if wait else self

    def wait_ready(self) -> ServerProcess:
        wait_until(self._ready, READY_TIMEOUT, interval=0.1)
        return self

    def _ready(self) -> McpResult | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {self.log()[-3000:]}")
        result = probe_mcp(self.url, timeout=2.0, min_tools=0)
        return result if result.ok else None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def start_mcp_server(tmp_path: Path) -> Iterator:
    """start_mcp_server(name, args, port=None) → a started ServerProcess, stopped after the test."""
    started: list[ServerProcess] = []

    def start(name: str, args: list[str] | None = None, port: int | None = None, wait: bool = True) -> ServerProcess:
        server = ServerProcess(name, tmp_path, args, port).start(wait=wait)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


def run(coro):
    return asyncio.run(coro)


async def _call(url: str, tool: str, arguments: dict[str, Any] | None) -> CallToolResult:
    async with Client(url, mode="legacy", cache=None) as client:
        return await client.call_tool(tool, arguments or {})


def call(url: str, tool: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
    """One tools/call in a fresh MCP session (official SDK client, initialize handshake)."""
    return run(_call(url, tool, arguments))


async def _tools(url: str) -> list:
    async with Client(url, mode="legacy", cache=None) as client:
        return (await client.list_tools()).tools


def list_tools(url: str) -> list:
    return run(_tools(url))


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(item, "text", "") for item in result.content)


def structured(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a successful call (falls back to the JSON text content)."""
    assert not result.is_error, text_of(result)
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(text_of(result))


class Origin:
    """A real local HTTP server for the http tools to call.

    /text       200 text/plain with X-Origin: yes
    /echo       echoes method, path, headers and body as JSON (any method)
    /binary     bytes that are not UTF-8
    /big        BIG_BYTES of 'a'
    /slow       answers after SLOW_S seconds
    /status/N   answers status N
    """

    BIG_BYTES = 300 * 1024
    SLOW_S = 3.0

    def __init__(self) -> None:
        self.port = free_port()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Origin:
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, ctype, extra, payload = 200, "text/plain; charset=utf-8", {}, b""
                if self.path == "/text":
                    payload, extra = "héllo from origin".encode(), {"X-Origin": "yes"}
                elif self.path == "/echo":
                    ctype = "application/json"
                    payload = json.dumps({"method": self.command, "path": self.path,
                                          "headers": {k.lower(): v for k, v in self.headers.items()},
                                          "body": body.decode("utf-8", "replace")}).encode()
                elif self.path == "/binary":
                    ctype, payload = "application/octet-stream", bytes([0, 255, 254, 1, 2, 3, 128])
                elif self.path == "/big":
                    payload = b"a" * origin.BIG_BYTES
                elif self.path == "/slow":
                    time.sleep(origin.SLOW_S)
                    payload = b"late"
                elif self.path.startswith("/status/"):
                    status, payload = int(self.path.rsplit("/", 1)[1]), b"as you wish"
                else:
                    status, payload = 404, b"no such path"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin().start()
    yield server
    server.stop()
