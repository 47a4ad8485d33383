"""mesh-controller: Consul's health API -> HAProxy's runtime API, without reloads.

consul-template's loop, nothing else:
  watch   one blocking query per routed service (`/v1/health/service/<name>?index=&wait=`);
  render  `reconcile(shape, servers, endpoints, expired)` — PURE: what to change so HAProxy's
          servers match what Consul says (unit-tested in tests/proxy/test_render.py);
  apply   the changes through the runtime API (`set server addr/port/state/health`,
          `add server`, `del server`), then read `show servers state` again next time.

Desired state per instance: Consul passing -> ready; warning -> drain (keeps its sessions, gets
no new ones); critical -> maint. An instance Consul no longer lists (deregistered) -> drain for
`drain_grace` seconds (sticky MCP sessions still reach it while it is still up), then maint;
servers added at runtime are then deleted, spare slots freed, planned servers stay in maint.

While Consul is unreachable the last-known-good endpoints are kept and nothing is taken out.

Reloads (the only time HAProxy re-reads haproxy.cfg) happen when the *shape* embedded in
haproxy.cfg (see meshspec.proxy.render.config_shape) differs from the one HAProxy runs: the
controller checks the file every `resync` seconds, validates it with `haproxy -c`, dumps
`show servers state` into the server-state file (so addresses and states of all servers survive)
and sends SIGUSR2 to the master (hitless: listeners are handed over, old workers finish their
connections, stick tables move over through the `peers` section), then re-applies membership.
A membership-only change in the file never reloads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import aiohttp
import typer
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from meshspec.proxy.render import read_shape, server_id
from meshspec.proxy.runtime import RuntimeApi, RuntimeApiError, ServerState

log = logging.getLogger("meshspec.controller")

TARGET = {"passing": "ready", "warning": "drain", "critical": "maint"}


# --- the pure part --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """One instance as Consul's health API reports it."""

    id: str
    addr: str
    port: int
    status: str  # passing | warning | critical (the worst of its checks)

    @property
    def target(self) -> str:
        return TARGET.get(self.status, "maint")


@dataclass(frozen=True)
class Change:
    kind: str  # assign | address | ready | drain | maint | weight | add | delete
    backend: str
    server: str
    commands: tuple[str, ...]


@dataclass
class Reconciliation:
    changes: list[Change] = field(default_factory=list)
    gone: set[tuple[str, str]] = field(default_factory=set)  # (backend, server) Consul no longer lists


def parse_health(entries: list[dict], mesh: str | None = None) -> list[Endpoint]:
    """`/v1/health/service/<name>` -> endpoints (registrations of another mesh are skipped)."""
    rank = {"passing": 0, "warning": 1, "critical": 2}
    out = []
    for entry in entries:
        service, node = entry.get("Service") or {}, entry.get("Node") or {}
        meta = service.get("Meta") or {}
        if mesh and meta.get("mesh") not in (None, mesh):
            continue
        statuses = [c.get("Status", "critical") for c in entry.get("Checks") or []]
        worst = max(statuses, key=lambda s: rank.get(s, 2), default="passing")
        out.append(Endpoint(service["ID"], service.get("Address") or node.get("Address", ""),
                            int(service["Port"]), worst if worst in rank else "critical"))
    return sorted(out, key=lambda e: e.id)


def replica_of(instance_id: str) -> int | None:
    match = re.search(r"-(\d+)$", instance_id)
    return int(match.group(1)) if match else None


def weight_for(backend: dict, instance_id: str) -> int | None:
    weights = backend.get("replica_weights") or []
    replica = replica_of(instance_id)
    if not weights:
        return None
    return weights[replica] if replica is not None and replica < len(weights) else 1


def _state_commands(ref: str, server: ServerState | None, target: str, moved: bool) -> list[str]:
    if target == "ready":
        if server is not None and server.admin == "ready" and not moved:
            return []
        # Consul says it passes: in rotation now; HAProxy's own checks (and breaker) take it from there.
        return [f"set server {ref} health up", f"set server {ref} state ready"]
    if server is not None and server.admin == target:
        return []
    return [f"set server {ref} state {target}"]


def reconcile_backend(backend: str, shape: dict, servers: list[ServerState], endpoints: list[Endpoint],
                      expired: set[str] = frozenset()) -> Reconciliation:
    """What to change in one backend so it serves exactly `endpoints`. `expired`: server names whose
    drain grace is over."""
    result = Reconciliation()
    spares = set(shape.get("spares", []))
    planned = set(shape.get("planned", []))
    by_name = {s.name: s for s in servers}
    claimed: dict[str, str] = {}  # server name -> endpoint id

    def claim(e: Endpoint, name: str) -> None:
        claimed[name] = e.id

    unplaced = []
    for e in endpoints:  # 1. a server named after the instance (planned or added at runtime)
        if e.id in by_name:
            claim(e, e.id)
        else:
            unplaced.append(e)
    still = []
    for e in unplaced:  # 2. a spare slot already holding its address
        slot = next((s.name for s in sorted(servers, key=lambda s: s.id) if s.name in spares and s.name not in claimed
                     and (s.addr, s.port) == (e.addr, e.port)), None)
        if slot:
            claim(e, slot)
        else:
            still.append(e)
    free = [s.name for s in sorted(servers, key=lambda s: s.id)
            if s.name in spares and s.name not in claimed and s.admin == "maint"]
    by_id = {e.id: e for e in endpoints}
    taken_ids = {s.id for s in servers}

    for name, eid in sorted(claimed.items()):
        e, s = by_id[eid], by_name[name]
        ref = f"{backend}/{name}"
        moved = (s.addr, s.port) != (e.addr, e.port)
        cmds = [f"set server {ref} addr {e.addr} port {e.port}"] if moved else []
        cmds += _state_commands(ref, s, e.target, moved)
        weight = weight_for(shape, e.id)
        if weight is not None and weight != s.weight:
            cmds.append(f"set server {ref} weight {weight}")
        if cmds:
            kind = "address" if moved else (e.target if "state" in cmds[0] or "health" in cmds[0] else "weight")
            result.changes.append(Change(kind, backend, name, tuple(cmds)))

    for e in still:  # 3. a free spare slot, else 4. add server
        weight = weight_for(shape, e.id) or 1
        if free:
            name = free.pop(0)
            ref = f"{backend}/{name}"
            cmds = [f"set server {ref} addr {e.addr} port {e.port}"]
            if by_name[name].weight != weight:
                cmds.append(f"set server {ref} weight {weight}")
            cmds += _state_commands(ref, None, e.target, True)
            result.changes.append(Change("assign", backend, name, tuple(cmds)))
        else:
            sid = server_id(e.id)
            while sid in taken_ids:
                sid += 1
            taken_ids.add(sid)
            ref = f"{backend}/{e.id}"
            cmds = [f"add server {ref} {e.addr}:{e.port} id {sid} weight {weight} {shape['server_options']}",
                    f"enable health {ref}"]
            cmds += _state_commands(ref, None, e.target, True)
            result.changes.append(Change("add", backend, e.id, tuple(cmds)))

    for s in servers:  # servers Consul does not list (any more)
        if s.name in claimed:
            continue
        ref = f"{backend}/{s.name}"
        dynamic = s.name not in spares and s.name not in planned
        if s.admin == "maint":
            if dynamic:
                result.changes.append(Change("delete", backend, s.name, (f"del server {ref}",)))
            continue
        result.gone.add((backend, s.name))
        if s.name in expired:
            result.changes.append(Change("maint", backend, s.name, (f"set server {ref} state maint",)))
        elif s.admin == "ready":
            result.changes.append(Change("drain", backend, s.name, (f"set server {ref} state drain",)))
    return result


def reconcile(shape: dict, servers: list[ServerState], endpoints: dict[str, list[Endpoint]],
              expired: set[tuple[str, str]] = frozenset()) -> Reconciliation:
    """All backends of the shape. A service whose endpoints are unknown (never read from Consul) is left
    alone; a backend HAProxy does not have yet (shape newer than the running config) is skipped."""
    result = Reconciliation()
    present = {s.backend for s in servers}
    for backend, spec in shape["backends"].items():
        service = spec["service"]
        if service not in endpoints or backend not in present:
            continue
        mine = [s for s in servers if s.backend == backend]
        part = reconcile_backend(backend, spec, mine, endpoints[service], {n for b, n in expired if b == backend})
        result.changes += part.changes
        result.gone |= part.gone
    return result


# --- reload ---------------------------------------------------------------------------------------

class ReloadError(Exception):
    pass


def validate_config(config: Path) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    check = subprocess.run([haproxy, "-c", "-q", "-f", str(config)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise ReloadError(f"{config} is invalid: {(check.stdout + check.stderr).strip()[-2000:]}")


def reload_haproxy(api: RuntimeApi, pidfile: Path, state_file: Path, config: Path | None = None,
                   timeout: float = 10.0) -> str:
    """Hitless reload: validate, save server state, SIGUSR2 the master, wait for the new worker.
    Returns the new worker's pid."""
    if config is not None:
        validate_config(config)
    old = api.info().get("Pid")
    state_file.write_text(api.send("show servers state"))
    master = int(pidfile.read_text().split()[0])
    os.kill(master, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = api.info().get("Pid")
            if pid and pid != old:
                return pid
        except RuntimeApiError:
            pass
        time.sleep(0.05)
    raise ReloadError(f"no new HAProxy worker within {timeout}s after SIGUSR2 to {master}")


# --- the loop -------------------------------------------------------------------------------------

class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.sync_lag = Histogram("meshspec_controller_sync_lag_seconds",
                                  "From a Consul change seen to it applied in HAProxy", registry=registry,
                                  buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.last_index = Gauge("meshspec_controller_last_applied_index", "Consul index last applied",
                                ["service"], registry=registry)
        self.errors = Counter("meshspec_controller_errors_total", "Errors by where they happened",
                              ["where"], registry=registry)
        self.changes = Counter("meshspec_controller_applied_changes_total", "Changes applied to HAProxy",
                               ["kind"], registry=registry)
        self.reloads = Counter("meshspec_controller_reloads_total", "HAProxy reloads triggered", registry=registry)
        self.consul_up = Gauge("meshspec_controller_consul_up", "1 while Consul answers", registry=registry)
        self.haproxy_up = Gauge("meshspec_controller_haproxy_up", "1 while the runtime API answers",
                                registry=registry)
        self.last_sync = Gauge("meshspec_controller_last_sync_timestamp_seconds", "Last successful sync",
                               registry=registry)


class Controller:
    def __init__(self, consul: str, runtime: RuntimeApi, config: Path, *, token: str | None = None,
                 pidfile: Path | None = None, state_file: Path | None = None, mesh: str | None = None,
                 drain_grace: float = 30.0, wait: str = "30s", resync: float = 1.0,
                 registry: CollectorRegistry | None = None) -> None:
        self.consul = consul if consul.startswith("http") else f"http://{consul}"
        self.api, self.config, self.token, self.mesh = runtime, config, token, mesh
        self.shape = read_shape(config.read_text()) or {"backends": {}, "hash": None}
        paths = self.shape.get("paths", {})
        self.pidfile = pidfile or (Path(paths["pidfile"]) if "pidfile" in paths else None)
        self.state_file = state_file or (Path(paths["state_file"]) if "state_file" in paths else None)
        self.loaded_file = (self.state_file.parent / "loaded-shape") if self.state_file else None
        self.drain_grace, self.wait, self.resync = drain_grace, wait, resync
        self.metrics = Metrics(registry or CollectorRegistry())
        self.endpoints: dict[str, list[Endpoint]] = {}
        self.indexes: dict[str, int] = {}
        self.changed_at: dict[str, float] = {}
        self.gone_since: dict[tuple[str, str], float] = {}
        self.loaded_hash = self._initial_loaded_hash()
        self.wake = asyncio.Event()
        self.watchers: dict[str, asyncio.Task] = {}
        self.consul_ok = False
        self.haproxy_ok = False
        self.last_error = ""
        self.synced = asyncio.Event()

    def _initial_loaded_hash(self) -> str | None:
        if self.loaded_file and self.loaded_file.exists():
            return self.loaded_file.read_text().strip()
        if self.pidfile and self.pidfile.exists() and self.config.stat().st_mtime > self.pidfile.stat().st_mtime:
            return None  # written after HAProxy started: reload on the first tick
        return self.shape.get("hash")

    @property
    def services(self) -> set[str]:
        return {b["service"] for b in self.shape["backends"].values()}

    # --- watch ---------------------------------------------------------------------------------

    async def watch(self, session: aiohttp.ClientSession, service: str) -> None:
        index, backoff = 0, 0.2
        url = f"{self.consul}/v1/health/service/{service}"
        while True:
            try:
                params = {"index": str(index), "wait": self.wait}
                timeout = aiohttp.ClientTimeout(total=_seconds(self.wait) + 10)
                async with session.get(url, params=params, timeout=timeout) as response:
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
                    new_index = int(response.headers.get("X-Consul-Index", "0") or 0)
                    body = await response.json(content_type=None)
                index = new_index if new_index >= index else 0  # an index going backwards resets (Consul's rule)
                endpoints = parse_health(body or [], self.mesh)
                self.consul_ok, backoff = True, 0.2
                self.metrics.consul_up.set(1)
                self.indexes[service] = index
                if endpoints != self.endpoints.get(service):
                    self.endpoints[service] = endpoints
                    self.changed_at.setdefault(service, time.monotonic())
                    self.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # keep last-known-good; retry with backoff
                self.consul_ok = False
                self.metrics.consul_up.set(0)
                self.metrics.errors.labels("consul").inc()
                self.last_error = f"consul {service}: {err}"
                log.warning("consul watch %s: %s", service, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _sync_watchers(self, session: aiohttp.ClientSession) -> None:
        for service in self.services - self.watchers.keys():
            self.watchers[service] = asyncio.create_task(self.watch(session, service))
        for service in set(self.watchers) - self.services:
            self.watchers.pop(service).cancel()
            self.endpoints.pop(service, None)

    # --- reload when the shape changed ---------------------------------------------------------

    def check_config(self) -> bool:
        """Re-read haproxy.cfg; reload HAProxy when its shape differs from the loaded one. True if reloaded."""
        try:
            shape = read_shape(self.config.read_text())
        except OSError as err:
            self.metrics.errors.labels("config").inc()
            self.last_error = f"config: {err}"
            return False
        if shape is None:
            return False
        self.shape = shape
        if shape.get("hash") == self.loaded_hash:
            return False
        return self.reload()

    def reload(self) -> bool:
        if not (self.pidfile and self.state_file):
            self.last_error = "reload needed but no pidfile/state file is known"
            self.metrics.errors.labels("reload").inc()
            return False
        try:
            reload_haproxy(self.api, self.pidfile, self.state_file, self.config)
        except (ReloadError, RuntimeApiError, OSError, ValueError) as err:
            self.metrics.errors.labels("reload").inc()
            self.last_error = f"reload: {err}"
            log.error("reload failed: %s", err)
            return False
        self.loaded_hash = self.shape.get("hash")
        if self.loaded_file:
            self.loaded_file.write_text(f"{self.loaded_hash}\n")
        self.metrics.reloads.inc()
        log.info("HAProxy reloaded for shape %s", self.loaded_hash)
        return True

    # --- apply ---------------------------------------------------------------------------------

    def sync(self) -> list[Change]:
        """One reconcile pass (blocking: call it in a thread)."""
        try:
            servers = self.api.servers_state()
            self.haproxy_ok = True
            self.metrics.haproxy_up.set(1)
        except RuntimeApiError as err:
            self.haproxy_ok = False
            self.metrics.haproxy_up.set(0)
            self.metrics.errors.labels("haproxy").inc()
            self.last_error = str(err)
            return []
        now = time.monotonic()
        expired = {key for key, since in self.gone_since.items() if now - since >= self.drain_grace}
        endpoints = dict(self.endpoints)
        result = reconcile(self.shape, servers, endpoints, expired)
        applied = []
        for change in result.changes:
            try:
                for command in change.commands:
                    self.api.command(command)
                applied.append(change)
                self.metrics.changes.labels(change.kind).inc()
                log.info("%s %s/%s", change.kind, change.backend, change.server)
            except RuntimeApiError as err:
                self.metrics.errors.labels("apply").inc()
                self.last_error = str(err)
                log.warning("apply %s: %s", change, err)
        self.gone_since = {key: self.gone_since.get(key, now) for key in result.gone}
        done = time.monotonic()
        for service, seen in list(self.changed_at.items()):
            if service in endpoints:
                self.metrics.sync_lag.observe(done - seen)
                self.metrics.last_index.labels(service).set(self.indexes.get(service, 0))
                del self.changed_at[service]
        self.metrics.last_sync.set(time.time())
        return applied

    async def run(self) -> None:
        headers = {"X-Consul-Token": self.token} if self.token else {}
        async with aiohttp.ClientSession(headers=headers) as session:
            try:
                while True:
                    self._sync_watchers(session)
                    try:
                        await asyncio.wait_for(self.wake.wait(), self.resync)
                    except asyncio.TimeoutError:
                        pass
                    self.wake.clear()
                    await asyncio.to_thread(self.check_config)
                    await asyncio.to_thread(self.sync)
                    self.synced.set()
            finally:
                for task in self.watchers.values():
                    task.cancel()

    # --- HTTP ----------------------------------------------------------------------------------

    def status(self) -> dict:
        return {"status": "ok" if self.haproxy_ok else "haproxy unreachable",
                "haproxy": self.haproxy_ok, "consul": self.consul_ok,
                "services": len(self.services), "known": len(self.endpoints),
                "shape": self.loaded_hash, "last_error": self.last_error}

    def app(self) -> web.Application:
        async def health(_: web.Request) -> web.Response:
            # Consul down is degraded, not unhealthy: the last-known-good state keeps serving.
            return web.json_response(self.status(), status=200 if self.haproxy_ok else 503)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.metrics.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/metrics", metrics)
        return app


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", duration)
    if not match:
        return 300.0
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


async def serve(controller: Controller, listen: str) -> None:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(controller.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    try:
        await controller.run()
    finally:
        await runner.cleanup()


def controller_command(
    consul: Annotated[str, typer.Option("--consul", envvar="CONSUL_HTTP_ADDR", help="Consul address host:port.")],
    haproxy_runtime: Annotated[str, typer.Option("--haproxy-runtime", help="HAProxy runtime API host:port.")],
    listen: Annotated[str, typer.Option("--listen", help="host:port for GET /health and GET /metrics.")],
    haproxy_config: Annotated[Path, typer.Option("--haproxy-config", help="The rendered haproxy.cfg (its shape "
                                                 "says which services to watch; a changed shape reloads).")],
    token_file: Annotated[Path | None, typer.Option("--token-file", help="File holding the Consul token.")] = None,
    mesh: Annotated[str | None, typer.Option("--mesh", help="Ignore registrations of another mesh.")] = None,
    haproxy_pidfile: Annotated[Path | None, typer.Option("--haproxy-pidfile", help="The master's pidfile "
                                                         "(default: from the config's shape).")] = None,
    drain_grace: Annotated[float, typer.Option("--drain-grace", help="Seconds a deregistered instance drains.")] = 30.0,
    wait: Annotated[str, typer.Option("--wait", help="Blocking-query wait.")] = "30s",
) -> None:
    """Keep HAProxy's servers in step with Consul's health API, through the runtime API."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    token = os.environ.get("CONSUL_HTTP_TOKEN")
    if token_file is not None and token_file.exists():
        token = token_file.read_text().strip() or token
    controller = Controller(consul, RuntimeApi(haproxy_runtime), haproxy_config, token=token,
                            pidfile=haproxy_pidfile, mesh=mesh, drain_grace=drain_grace, wait=wait)
    asyncio.run(serve(controller, listen))




__all__ = ["Change", "Controller", "Endpoint", "Reconciliation", "controller_command", "parse_health",
           "reconcile", "reconcile_backend", "reload_haproxy"]
