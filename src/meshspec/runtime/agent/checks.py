"""Check runners: HTTP, TCP, script (Args), docker (Args exec'd in a container) on an interval, TTL on a timer.

Each runner is one asyncio task reporting (status, output) through a Thresholds gate that applies
SuccessBeforePassing / FailuresBeforeWarning / FailuresBeforeCritical as Consul's StatusHandler does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import docker

from meshspec.common.durations import format_duration
from meshspec.runtime.agent import VERSION
from meshspec.runtime.probes.gate import Gate

log = logging.getLogger("meshspec.agent.checks")

Report = Callable[[str, str, str], None]  # (check_id, status, output)
DEFAULT_HTTP_TIMEOUT = 10.0
DEFAULT_TCP_TIMEOUT = 10.0
DEFAULT_SCRIPT_TIMEOUT = 30.0


class Thresholds:
    """Consul's StatusHandler (probes.gate) in front of the agent's report: a result changes the
    status only after enough consecutive ones."""

    def __init__(self, check: dict[str, Any], report: Report) -> None:
        self.check_id = check["CheckID"]
        self._gate = Gate(check["SuccessBeforePassing"], check["FailuresBeforeCritical"], check["FailuresBeforeWarning"])
        self._report = report

    def __call__(self, status: str, output: str) -> None:
        published = self._gate(status)
        if published is not None:
            self._report(self.check_id, published, output)


def truncate(output: str, limit: int) -> str:
    if len(output) <= limit:
        return output
    return f"{output[:limit]} ... (captured {limit} of {len(output)} bytes)"


def _describe_error(exc: BaseException, network: str, target: str) -> str:
    """Go-like wording so outputs read like Consul's ("dial tcp ...: connect: connection refused")."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"dial {network} {target}: i/o timeout"
    if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        return f"dial {network} {target}: connect: connection refused"
    return f"dial {network} {target}: {exc}"


async def http_probe(check: dict[str, Any], session: aiohttp.ClientSession) -> tuple[str, str]:
    method = (check["Method"] or "GET").upper()
    url = check["HTTP"]
    headers = [("User-Agent", f"Consul Health Check/{VERSION}"), ("Accept", "text/plain, text/*, */*")]
    custom = {k.lower() for k in check["Header"]}
    headers = [h for h in headers if h[0].lower() not in custom]
    headers += [(name, value) for name, values in check["Header"].items() for value in values]
    timeout = aiohttp.ClientTimeout(total=check["Timeout"] or DEFAULT_HTTP_TIMEOUT)
    tls: Any = not check["TLSSkipVerify"]
    try:
        async with session.request(
            method, url, headers=headers, data=check["Body"] or None, timeout=timeout, ssl=tls,
            allow_redirects=not check["DisableRedirects"],
        ) as response:
            body = await _read_up_to(response.content, check["OutputMaxSize"])
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
        return "critical", f'{method.title()} "{url}": {_http_error(exc, url)}'
    text = body.decode("utf-8", "replace")
    output = f"HTTP {method} {url}: {response.status} {response.reason} Output: {text}"
    return _http_status(response.status), output


async def _read_up_to(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to `limit` bytes, as Consul's LimitReader reads it: one `read(n)` returns what has
    arrived so far, which cuts an answer that comes in several segments."""
    body = b""
    while len(body) < limit and (chunk := await stream.read(limit - len(body))):
        body += chunk
    return body


def _http_status(code: int) -> str:
    if 200 <= code < 300:
        return "passing"
    return "warning" if code == 429 else "critical"


def _http_error(exc: BaseException, url: str) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _describe_error(exc.os_error, "tcp", f"{exc.host}:{exc.port}")
    return str(exc) or type(exc).__name__


async def tcp_probe(check: dict[str, Any]) -> tuple[str, str]:
    target = check["TCP"]
    host, _, port = target.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), check["Timeout"] or DEFAULT_TCP_TIMEOUT
        )
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        return "critical", _describe_error(exc, "tcp", target)
    writer.close()
    return "passing", f"TCP connect {target}: Success"


async def script_probe(check: dict[str, Any]) -> tuple[str, str]:
    timeout = check["Timeout"] or DEFAULT_SCRIPT_TIMEOUT
    try:
        proc = await asyncio.create_subprocess_exec(
            *check["ScriptArgs"], stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return "critical", f"Failed to exec check: {exc}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return "critical", f"Timed out ({format_duration(timeout)}) running check"
    output = truncate(out.decode("utf-8", "replace"), check["OutputMaxSize"])
    status = {0: "passing", 1: "warning"}.get(proc.returncode, "critical")
    return status, output


def _exec_in_container(client: docker.DockerClient, container_id: str, args: list[str]) -> tuple[int, bytes]:
    result = client.containers.get(container_id).exec_run(args, stdin=False)
    return result.exit_code, result.output or b""


async def docker_probe(check: dict[str, Any], client: docker.DockerClient) -> tuple[str, str]:
    """Consul's docker check: Args run in DockerContainerID through the engine's exec API."""
    timeout = check["Timeout"] or DEFAULT_SCRIPT_TIMEOUT
    try:
        code, out = await asyncio.wait_for(
            asyncio.to_thread(_exec_in_container, client, check["DockerContainerID"], check["ScriptArgs"]), timeout)
    except asyncio.TimeoutError:
        return "critical", f"Timed out ({format_duration(timeout)}) running check"
    except docker.errors.DockerException as exc:
        return "critical", f"Failed to exec check in container {check['DockerContainerID']}: {exc}"
    output = truncate(out.decode("utf-8", "replace"), check["OutputMaxSize"])
    return {0: "passing", 1: "warning"}.get(code, "critical"), output


class Runners:
    """One task per check; (re)started on registration and at startup, stopped on removal."""

    def __init__(self, report: Report) -> None:
        self._report = report
        self._tasks: dict[str, asyncio.Task] = {}
        self._ttl_timers: dict[str, asyncio.TimerHandle] = {}
        self._session: aiohttp.ClientSession | None = None
        self._docker: docker.DockerClient | None = None  # made on the first docker check

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=True, ssl=ssl.create_default_context())
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)

    async def close(self) -> None:
        for check_id in list(self._tasks) + list(self._ttl_timers):
            self.stop(check_id)
        if self._session:
            await self._session.close()
        if self._docker:
            self._docker.close()

    def start(self, check: dict[str, Any]) -> None:
        self.stop(check["CheckID"])
        if check["Type"] in ("maintenance", "alias"):
            return  # maintenance: held by the operator; alias: kept in step by the agent; neither is probed
        if check["Type"] == "ttl":
            self.reset_ttl(check)
            return
        gate = Thresholds(check, self._report)
        self._tasks[check["CheckID"]] = asyncio.create_task(self._loop(check, gate), name=check["CheckID"])

    def stop(self, check_id: str) -> None:
        task = self._tasks.pop(check_id, None)
        if task:
            task.cancel()
        timer = self._ttl_timers.pop(check_id, None)
        if timer:
            timer.cancel()

    def reset_ttl(self, check: dict[str, Any]) -> None:
        """(Re)arm a TTL check: it goes critical unless updated again within its TTL."""
        timer = self._ttl_timers.pop(check["CheckID"], None)
        if timer:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._ttl_timers[check["CheckID"]] = loop.call_later(
            check["TTL"], self._report, check["CheckID"], "critical", "TTL expired"
        )

    async def _loop(self, check: dict[str, Any], gate: Thresholds) -> None:
        # Stagger first runs (as Consul does) so checks do not fire in lockstep, but by at most a
        # second so a new registration shows its real status promptly.
        await asyncio.sleep(random.random() * min(check["Interval"], 1.0))
        while True:
            try:
                status, output = await self._probe(check)
                gate(status, truncate(output, check["OutputMaxSize"]))
            except asyncio.CancelledError:
                raise
            except Exception:  # a runner must survive anything a probe throws
                log.exception("check %s failed to run", check["CheckID"])
            await asyncio.sleep(check["Interval"])

    async def _probe(self, check: dict[str, Any]) -> tuple[str, str]:
        if check["Type"] == "http":
            assert self._session is not None
            return await http_probe(check, self._session)
        if check["Type"] == "tcp":
            return await tcp_probe(check)
        if check["Type"] == "docker":
            if self._docker is None:
                try:
                    self._docker = docker.from_env()
                except docker.errors.DockerException as exc:
                    return "critical", f"Docker engine unreachable: {exc}"
            return await docker_probe(check, self._docker)
        return await script_probe(check)
