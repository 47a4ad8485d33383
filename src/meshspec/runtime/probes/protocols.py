"""Every probe kind, run once, in this process: what the host's checker runs each interval and what
verify's `healthy` runs once. No process is started per probe except for a `command` probe, which
is one by definition.

A probe is the plain dict of `meshspec.render.probes.Probe` (as the checker reads it from its JSON
file). `run(probe, timeout)` never raises for a server's fault: it returns a `Result` whose `output`
is one line saying who answered what, or which step failed.
"""

from __future__ import annotations

import asyncio
import shlex
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial, wraps
from typing import Any
from urllib.parse import urlsplit

import httpx

from meshspec.common import nonce
from meshspec.common.consul_token import read_token
from meshspec.runtime.probes.mcp import KeptSession, probe_mcp
from meshspec.runtime.probes.owner import Owner, Tracker

OUTPUT_LIMIT = 200
EVENTUALLY_EVERY = 0.1  # seconds between the reads of a probe whose service stores asynchronously


@dataclass(frozen=True)
class Result:
    ok: bool
    output: str  # one line
    details: dict[str, Any] = field(default_factory=dict)  # http_status, tool_count, exit_code, ...


def _one_line(text: object, limit: int = OUTPUT_LIMIT) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _failed(where: str, err: BaseException) -> Result:
    what = "timed out" if isinstance(err, (TimeoutError, asyncio.TimeoutError, socket.timeout)) else _one_line(err)
    return Result(False, f"{where} failed: {what or type(err).__name__}")


Fill = Callable[[str | None], str | None]  # puts this run's nonce in a probe's text


def _send(client: httpx.Client, request: dict, fill: Fill, deadline: float) -> httpx.Response | Result:
    """One request of an HTTP probe, within what is left of its timeout; a Result when it failed."""
    method, url = request["method"], fill(request["url"])
    left = deadline - time.monotonic()
    if left <= 0:
        return Result(False, f"{method} {url} not sent: the probe's timeout ran out before it")
    try:
        return client.request(method, url, headers={k: fill(v) for k, v in request["headers"].items()},
                              content=fill(request["body"]), timeout=left)
    except httpx.HTTPError as err:
        return _failed(f"{method} {url}", err)


def _answered(request: dict, response: httpx.Response, fill: Fill) -> str:
    return f"{request['method']} {fill(request['url'])} answered HTTP {response.status_code} {response.reason_phrase}"


def _step(client: httpx.Client, step: dict, fill: Fill, deadline: float) -> Result | None:
    """A step before or after the probe's own request: None when it answered 2xx (with what its
    `contains` names, if it names something)."""
    result = _read(step, _send(client, step, fill, deadline), fill)
    return None if result.ok else result


def http(probe: dict, timeout: float) -> Result:
    """The probe's request, answering 2xx with `contains` in its body. Its `before` steps go first
    and its `after` steps last, each answering 2xx with its own `contains`; every text has this
    run's own nonce in place of `{nonce}`: only a service that stored this run's object can answer
    with it."""
    fill = partial(nonce.fill, nonce=nonce.fresh())
    deadline = time.monotonic() + timeout
    try:
        token = read_token(probe["token_file"]) if probe.get("token_file") else None
    except OSError as err:
        return _failed(f"reading the Consul token from {probe['token_file']}", err)
    try:
        auth = _credentials(probe["credentials_file"]) if probe.get("credentials_file") else None
    except (OSError, ValueError) as err:
        return _failed(f"reading the credentials from {probe['credentials_file']}", err)
    # Plain http needs no TLS context (building one costs ~20 ms of CPU per client).
    with httpx.Client(trust_env=False, timeout=timeout, verify=probe["url"].startswith("https:"), auth=auth,
                      headers={"X-Consul-Token": token} if token else None) as client:
        before = probe.get("before", ())
        for step in before:
            if failed := _step(client, step, fill, deadline):
                return failed
        result = _read(probe, _send(client, probe, fill, deadline), fill)
        while not result.ok and probe.get("eventually") and deadline - time.monotonic() > EVENTUALLY_EVERY:
            time.sleep(EVENTUALLY_EVERY)
            result = _read(probe, _send(client, probe, fill, deadline), fill)
        if before:
            stored = ", ".join(f"{s['method']} {urlsplit(fill(s['url'])).path}" for s in before)
            result = Result(result.ok, f"after {stored}: {result.output}", result.details)
        for step in probe.get("after", ()):
            failed = _step(client, step, fill, deadline)
            if failed and result.ok:
                result = Result(False, f"{result.output}; then {failed.output}", result.details)
    return result


def _credentials(path: str) -> tuple[str, str]:
    """(user, password) from a file holding `user:password`."""
    with open(path) as held:
        user, colon, password = held.read().strip().partition(":")
    if not colon:
        raise ValueError("it does not hold user:password")
    return user, password


def _logs_in(run: Callable[[dict, float, str, str | None], Result]) -> Callable[[dict, float], Result]:
    """A protocol probe that logs in, given its user and password: its service's credentials, read
    as it runs (never kept in the checks file), or the probe's own options."""
    @wraps(run)
    def logged_in(probe: dict, timeout: float) -> Result:
        if not probe.get("credentials_file"):
            return run(probe, timeout, probe["options"]["user"], probe["options"].get("password"))
        try:
            user, password = _credentials(probe["credentials_file"])
        except (OSError, ValueError) as err:
            return _failed(f"reading the credentials from {probe['credentials_file']}", err)
        return run(probe, timeout, user, password)
    return logged_in


def _read(probe: dict, response: httpx.Response | Result, fill: Fill) -> Result:
    """The verdict on one request of the probe (its own, or a step): 2xx, and the text it must contain."""
    if isinstance(response, Result):
        return response
    answered = _answered(probe, response, fill)
    details = {"http_status": response.status_code}
    if not 200 <= response.status_code < 300:
        return Result(False, f"{answered} ({_one_line(response.text, 60)!r})", details)
    wanted = fill(probe.get("contains"))
    if wanted and wanted not in response.text:
        return Result(False, f"{answered} without {wanted!r} in its body ({_one_line(response.text, 60)!r})", details)
    return Result(True, f"{answered} with {wanted!r}" if wanted else answered, details)


def mcp(probe: dict, timeout: float, session: KeptSession | None = None) -> Result:
    """The MCP handshake and tools/list on a session of its own, or one tools/list on `session`,
    the one a checker keeps between intervals."""
    if session is None:
        found = probe_mcp(probe["url"], timeout=timeout, min_tools=probe["min_tools"])
    else:
        found = session.probe(timeout=timeout, min_tools=probe["min_tools"])
    return Result(found.ok, found.reason, {"tool_count": found.tool_count, "min_tools": probe["min_tools"],
                                           "protocol_version": found.protocol_version, "server": found.server_name})


def _where(probe: dict) -> str:
    return f"{probe['address']}:{probe['port']}"


def tcp(probe: dict, timeout: float) -> Result:
    try:
        with socket.create_connection((probe["address"], probe["port"]), timeout=timeout):
            return Result(True, f"{_where(probe)} accepts connections", {"listening": True})
    except OSError as err:
        what = "timed out" if isinstance(err, TimeoutError) else _one_line(err.strerror or err).lower()
        # "listening" tells a connect that ran and found nothing from a probe that could not run
        return Result(False, f"nothing listens at {_where(probe)} ({what})", {"listening": False})


@_logs_in
def postgres(probe: dict, timeout: float, user: str, password: str | None) -> Result:
    import asyncpg  # imported by the probes that use it: a checker of HTTP services pays nothing

    opts = probe["options"]

    async def session() -> tuple[Any, str]:
        conn = await asyncpg.connect(host=probe["address"], port=probe["port"], user=user, password=password,
                                     database=opts["database"], timeout=timeout, ssl=False)
        try:
            value = await conn.fetchval(opts["query"], timeout=timeout)
            version = ".".join(str(v) for v in conn.get_server_version()[:2])
        finally:
            await conn.close(timeout=timeout)
        return value, version

    try:
        value, version = asyncio.run(asyncio.wait_for(session(), timeout))
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        return _failed(f"postgres {_where(probe)}", err)
    return Result(True, f"PostgreSQL {version} at {_where(probe)} answered {opts['query']!r}: {value!r}")


@_logs_in
def mysql(probe: dict, timeout: float, user: str, password: str | None) -> Result:
    import pymysql

    opts = probe["options"]
    try:
        # Plain TCP, as the PostgreSQL probe: pymysql's default (TLS if the server offers it) builds
        # a TLS context per connection, loading the CA bundle (12% of the checker's CPU).
        conn = pymysql.connect(host=probe["address"], port=probe["port"], user=user, password=password or "",
                               connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout, ssl_disabled=True)
        try:
            with conn.cursor() as cursor:
                cursor.execute(opts["query"])
                row = cursor.fetchone()
            version = conn.get_server_info()
        finally:
            conn.close()
    except (OSError, pymysql.MySQLError) as err:
        return _failed(f"mysql {_where(probe)}", err)
    return Result(True, f"MySQL-protocol server {version} at {_where(probe)} answered {opts['query']!r}: {row!r}")


@_logs_in
def redis(probe: dict, timeout: float, user: str, password: str | None) -> Result:
    import redis as redis_client

    client = redis_client.Redis(host=probe["address"], port=probe["port"], socket_timeout=timeout,
                                socket_connect_timeout=timeout, username=user if password else None, password=password)
    try:
        pong = client.execute_command("PING")
    except (OSError, redis_client.RedisError) as err:
        return _failed(f"redis {_where(probe)}", err)
    finally:
        client.close()
    ok = pong in (True, b"PONG", "PONG")  # redis-py turns the PONG status reply into True
    return Result(ok, f"redis at {_where(probe)} answered PING with {'PONG' if ok else repr(pong)}")


@_logs_in
def amqp(probe: dict, timeout: float, user: str, password: str | None) -> Result:
    import aiormq
    from yarl import URL

    opts = probe["options"]
    url = URL.build(scheme="amqp", host=probe["address"], port=probe["port"], user=user,
                    password=password, path="/" + opts["vhost"].lstrip("/"))

    async def session() -> dict:
        conn = await aiormq.connect(url)
        try:
            return dict(conn.server_properties or {})
        finally:
            await conn.close()

    try:
        server = asyncio.run(asyncio.wait_for(session(), timeout))
    except (OSError, asyncio.TimeoutError, aiormq.exceptions.AMQPError) as err:
        return _failed(f"amqp {_where(probe)}", err)
    name = f"{_decoded(server.get('product', 'AMQP server'))} {_decoded(server.get('version', ''))}".strip()
    return Result(True, f"{name} at {_where(probe)} opened an AMQP 0-9-1 connection on vhost {opts['vhost']!r}")


def _decoded(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def command(probe: dict, timeout: float) -> Result:
    argv, container = list(probe["argv"]), probe["container"]
    shown = _one_line(shlex.join(argv), 120)
    if container:
        return _in_container(argv, container, timeout, shown)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Result(False, f"`{shown}` timed out after {timeout:g} s")
    except OSError as err:
        return Result(False, f"`{shown}` {_one_line(err)}")
    said = (done.stdout + done.stderr).strip().splitlines()
    return Result(done.returncode == 0, f"`{shown}` exited {done.returncode}: {_one_line(said[-1] if said else 'no output', 120)}",
                  {"exit_code": done.returncode})


def _in_container(argv: list[str], container: str, timeout: float, shown: str) -> Result:
    import docker

    try:
        engine = docker.from_env(timeout=max(1, int(timeout) + 5))
        try:  # coreutils' timeout bounds the run: the exec API has no timeout of its own
            done = engine.containers.get(container).exec_run(["timeout", f"{timeout:g}", *argv])
        finally:
            engine.close()
    except docker.errors.DockerException as err:
        return Result(False, f"`{shown}` in container {container}: {_one_line(err)}")
    if done.exit_code == 124:
        return Result(False, f"`{shown}` timed out after {timeout:g} s in container {container}")
    said = (done.output or b"").decode("utf-8", "replace").strip().splitlines()
    return Result(done.exit_code == 0, f"`{shown}` exited {done.exit_code} in container {container}: "
                  f"{_one_line(said[-1] if said else 'no output', 120)}", {"exit_code": done.exit_code})


KINDS: dict[str, Callable[[dict, float], Result]] = {
    "http": http, "mcp": mcp, "tcp": tcp, "postgres": postgres, "mysql": mysql, "redis": redis, "amqp": amqp,
    "command": command,
}


def run(probe: dict, timeout: float, tracker: Tracker | None = None, session: KeptSession | None = None) -> Result:
    """Run one probe of any kind; `timeout` bounds it (seconds). With an `owner`, the proof also
    names who answered, and fails when the instance's own process does not hold its port (a
    checker passes its `tracker`, which remembers the process tree between intervals, and for an
    MCP probe the `session` it keeps)."""
    result = mcp(probe, timeout, session) if session is not None else KINDS[probe["kind"]](probe, timeout)
    if not probe.get("owner"):
        return result
    verdict = (tracker or Tracker(Owner(**probe["owner"]))).check(min(timeout, 2.0))
    details = {**result.details, "pid": verdict.pid}
    if verdict.ok:
        return Result(result.ok, f"{result.output}; {verdict.reason}", details)
    if not verdict.listening and not result.ok:
        return result  # nothing listens: the probe's own failure says so, and where
    return Result(False, f"{verdict.reason}; the probe: {result.output}", details)
