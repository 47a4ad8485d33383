"""mesh-controller: Consul's health API -> HAProxy's runtime API, without reloads.

consul-template's loop, each step its own module:
  watch      (watch.py) one blocking query per routed or tunnelled service (`/v1/health/service/<name>?index=&wait=`);
  reconcile  (reconcile.py) PURE: what to change so HAProxy's servers match what Consul says;
  apply      (apply.py) the changes through the runtime API (`set server addr/port/state/health`,
             `add server`, `del server`), and a hitless reload when haproxy.cfg's shape changed.

This module is the loop: it starts a watch per service the config's shape routes, wakes on any
change (or every `resync` seconds), re-reads haproxy.cfg (a changed shape reloads HAProxy; a
membership-only change in the file never does), reconciles and applies. Beside the loop, every
OUTLIER_POLL_S it ejects outliers (outliers.py): servers whose requests keep being retried
elsewhere, which HAProxy's own breaker does not count; and it follows HAProxy's request log to count
each answer's duration per service (request_log.py). It serves GET /health, GET /metrics, and
Prometheus' targets from the registry (scrape_targets.py). While Consul is unreachable the
last-known-good endpoints are kept and nothing is taken out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import aiohttp
import typer
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from meshspec.common import scrape_meta
from meshspec.common.consul_token import read_token
from meshspec.common.durations import parse_duration
from meshspec.common.haproxy_shape import LOADED_SHAPE, read_shape
from meshspec.runtime.proxy.apply import ReloadError, apply_changes, reload_haproxy
from meshspec.runtime.proxy.certificates import keep_certificate
from meshspec.runtime.proxy.intentions import intention_map
from meshspec.runtime.proxy.maps import install_map
from meshspec.runtime.proxy.outliers import Outliers, breakers_of, lost_hosts, on_lost_hosts, rejoined
from meshspec.runtime.proxy.reconcile import Change, Endpoint, inbound_entries, reconcile
from meshspec.runtime.proxy.request_log import Durations, follow, slos_of
from meshspec.runtime.proxy.runtime_api import RuntimeApi, RuntimeApiError, ServerBusy
from meshspec.runtime.proxy.scrape_targets import bearer_token, read_catalog, target_groups
from meshspec.runtime.proxy.watch import FIRST_BACKOFF, MAX_BACKOFF, blocking_get, watch

log = logging.getLogger("meshspec.controller")
#: s between two reads of the servers' counters: a hung server's first timed-out requests are
#: seen within this of the retries that rescued them (one `show stat` a tick costs HAProxy little).
OUTLIER_POLL_S = 0.5


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
        self.certificates = Counter("meshspec_controller_certificates_installed_total",
                                    "Proxy certificates rotated into HAProxy", registry=registry)
        self.intention_changes = Counter("meshspec_controller_intention_map_changes_total",
                                         "Entries of HAProxy's intentions map changed", registry=registry)
        # The installed proxy certificate's validity: an alert when it nears its end, which means the
        # rotation at half its lifetime did not happen (MeshProxyCertificateExpiring).
        self.certificate_after = Gauge("meshspec_controller_certificate_valid_after_timestamp_seconds",
                                       "The installed proxy certificate's start of validity", registry=registry)
        self.certificate_before = Gauge("meshspec_controller_certificate_valid_before_timestamp_seconds",
                                        "The installed proxy certificate's end of validity", registry=registry)
        self.ejections = Counter("meshspec_controller_outlier_ejections_total",
                                 "Servers taken out of rotation for failures in a row that HAProxy's "
                                 "breaker does not count (retried elsewhere)", ["backend"], registry=registry)


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
        self.loaded_file = (self.state_file.parent / LOADED_SHAPE) if self.state_file else None
        self.drain_grace, self.wait, self.resync = drain_grace, wait, resync
        self.metrics = Metrics(registry or CollectorRegistry())
        self.durations = Durations(self.metrics.registry)
        self.slos = slos_of(self.shape)  # kept with the shape: read for every request's line
        self.durations.expect(self.slos)
        self.request_log: asyncio.Task | None = None
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
        self.rotating: dict | None = None  # the shape's certificate being rotated, and its task
        self.rotation: asyncio.Task | None = None
        self.certificate_until: str | None = None  # the installed proxy certificate's ValidBefore
        self.intentions: list[dict] | None = None  # the registry's, as last read (None: not yet)
        self.intentions_watch: asyncio.Task | None = None
        self.installed: dict[str, dict[str, str]] = {}  # map file -> its entries as last installed
        self.outliers = Outliers()
        self.busy: set[tuple[str, str]] = set()  # servers whose `del server` waits for their connections
        self.host_ejected: dict[tuple[str, str], str] = {}  # servers ejected for their host's loss -> its address

    def _initial_loaded_hash(self) -> str | None:
        if self.loaded_file and self.loaded_file.exists() and self.loaded_file.read_text().strip():
            return self.loaded_file.read_text().strip()
        if self.pidfile and self.pidfile.exists() and self.config.stat().st_mtime > self.pidfile.stat().st_mtime:
            return None  # written after HAProxy started: reload on the first tick
        return self.shape.get("hash")

    @property
    def services(self) -> set[str]:
        """The routed services (the intentions map's destinations)."""
        return {b["service"] for b in self.shape["backends"].values()}

    @property
    def watched(self) -> set[str]:
        """The services whose instances the controller follows: the routed ones and the tunnelled."""
        return self.services | {t["service"] for t in self.shape.get("tunnels", {}).values()}

    # --- watch ---------------------------------------------------------------------------------

    def seen(self, service: str, index: int, endpoints: list[Endpoint]) -> None:
        self.consul_ok = True
        self.metrics.consul_up.set(1)
        self.indexes[service] = index
        if endpoints != self.endpoints.get(service):
            self.endpoints[service] = endpoints
            self.changed_at.setdefault(service, time.monotonic())
            self.wake.set()

    def failed(self, service: str, err: Exception) -> None:
        self.consul_ok = False
        self.metrics.consul_up.set(0)
        self.metrics.errors.labels("consul").inc()
        self.last_error = f"consul {service}: {err}"
        log.warning("consul watch %s: %s", service, err)

    def _sync_watchers(self, session: aiohttp.ClientSession) -> None:
        for service in self.watched - self.watchers.keys():
            self.watchers[service] = asyncio.create_task(
                watch(session, self.consul, service, self.wait, self.mesh, self.seen, self.failed))
        for service in set(self.watchers) - self.watched:
            self.watchers.pop(service).cancel()
            self.endpoints.pop(service, None)

    def _certificate_installed(self, leaf: dict) -> None:
        self.certificate_until = leaf["ValidBefore"]
        for gauge, key in ((self.metrics.certificate_after, "ValidAfter"), (self.metrics.certificate_before, "ValidBefore")):
            gauge.set(datetime.fromisoformat(leaf[key]).timestamp())
        self.metrics.certificates.inc()  # last: a count that moved says the gauges are the new certificate's

    def _certificate_failed(self, err: Exception) -> None:
        self.metrics.errors.labels("certificate").inc()
        self.last_error = f"proxy certificate: {err}"
        log.warning("proxy certificate: %s", err)

    def _sync_rotation(self, session: aiohttp.ClientSession) -> None:
        """Rotate the proxy's certificate while haproxy.cfg has an mTLS listener (as the shape says)."""
        wanted = self.shape.get("certificate")
        if wanted == self.rotating:
            return
        if self.rotation:
            self.rotation.cancel()
        self.rotating, self.rotation = wanted, None
        if wanted:
            self.rotation = asyncio.create_task(keep_certificate(
                session, self.consul, wanted["service"], Path(wanted["path"]), self.api, self.wait,
                self._certificate_installed, self._certificate_failed))

    async def _watch_intentions(self, session: aiohttp.ClientSession) -> None:
        index, backoff = 0, FIRST_BACKOFF
        while True:
            try:
                index, body = await blocking_get(session, f"{self.consul}/v1/connect/intentions", index, self.wait)
                self.intentions, backoff = body or [], FIRST_BACKOFF
                self.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # keep the map HAProxy has; retry
                self.metrics.errors.labels("intentions").inc()
                self.last_error = f"intentions: {err}"
                log.warning("intentions watch: %s", err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _sync_intentions_watch(self, session: aiohttp.ClientSession) -> None:
        """Watch the registry's intentions while haproxy.cfg enforces them (an mTLS listener)."""
        if self.shape.get("intentions") and self.intentions_watch is None:
            self.intentions_watch = asyncio.create_task(self._watch_intentions(session))

    def apply_intentions(self) -> None:
        """HAProxy's intentions map, made to match the registry's intentions for the routed services."""
        path = self.shape.get("intentions")
        if path and self.intentions is not None:
            changed = self._keep_map("intentions", path, intention_map(self.intentions, self.services))
            self.metrics.intention_changes.inc(changed)

    def apply_inbound(self) -> None:
        """The inbound map, made to match the instances the registry lists on this host, once every
        followed service's have been read (until then an entry of one not yet read would go)."""
        peers = self.shape.get("peers")
        if peers and peers.get("map") and self.watched <= self.endpoints.keys():
            self._keep_map("inbound", peers["map"], inbound_entries(dict(self.endpoints), peers))

    def _keep_map(self, kind: str, path: str, wanted: dict[str, str]) -> int:
        """One of HAProxy's maps (its file and HAProxy's copy) made `wanted`; how many entries changed."""
        if wanted == self.installed.get(path):
            return 0
        try:
            changed = install_map(self.api, Path(path), wanted)
        except (RuntimeApiError, OSError) as err:
            self.metrics.errors.labels(kind).inc()
            self.last_error = f"{kind} map: {err}"
            log.error("%s map: %s", kind, err)
            return 0
        self.installed[path] = wanted
        log.info("%s map: %d entries, %d changed", kind, len(wanted), changed)
        return changed

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
        self.shape, self.slos = shape, slos_of(shape)
        self.durations.expect(self.slos)
        if shape.get("hash") == self.loaded_hash:
            return False
        return self.reload()

    def reload(self) -> bool:
        if not (self.pidfile and self.state_file):
            self.last_error = "reload needed but no pidfile/state file is known"
            self.metrics.errors.labels("reload").inc()
            return False
        try:
            reload_haproxy(self.api, self.pidfile, self.state_file)
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

    # --- outliers ------------------------------------------------------------------------------

    def eject_outliers(self) -> list[tuple[str, str]]:
        """One read of the servers' counters; open the breaker of each outlier and of each server
        on a host whose proxy fails its check (blocking: call it in a thread). The (backend,
        server)s ejected."""
        try:
            stats = self.api.server_stats()
        except RuntimeApiError:
            return []  # HAProxy unreachable or reloading: sync() counts it
        ejected = []
        for backend, server in rejoined(self.host_ejected, stats, self.shape):
            if self._set_health(backend, server, "up"):
                log.info("back %s/%s: its host's proxy passes its check again", backend, server)
        lost = lost_hosts(stats, self.shape)
        self.host_ejected = {key: host for key, host in self.host_ejected.items() if host in lost}
        on_lost = on_lost_hosts(stats, self.shape)
        why = {key: "its host's proxy fails its check" for key in on_lost}
        outliers = self.outliers.update(stats, breakers_of(self.shape))
        why |= {key: "its requests keep being retried elsewhere" for key in outliers}
        for (backend, server), reason in why.items():
            if not self._set_health(backend, server, "down"):
                continue
            self.metrics.ejections.labels(backend).inc()
            log.warning("ejected %s/%s: %s", backend, server, reason)
            ejected.append((backend, server))
        hosts = {(s.backend, s.name): s.host for s in stats}
        self.host_ejected |= {key: hosts[key] for key in on_lost if key in ejected}
        return ejected

    def _set_health(self, backend: str, server: str, health: str) -> bool:
        """Force a server's health up or down; False (counted, kept as the last error) when refused."""
        try:
            self.api.command(f"set server {backend}/{server} health {health}")
            return True
        except RuntimeApiError as err:
            self.metrics.errors.labels("outliers").inc()
            self.last_error = f"health {health} {backend}/{server}: {err}"
            return False

    async def _eject_outliers(self) -> None:
        while True:
            await asyncio.sleep(OUTLIER_POLL_S)
            await asyncio.to_thread(self.eject_outliers)

    # --- each answer's duration --------------------------------------------------------------------

    def _request_log_failed(self, err: Exception) -> None:
        self.metrics.errors.labels("request-log").inc()
        log.warning("request log: %s", err)

    def _follow_request_log(self) -> None:
        """(Re)start following HAProxy's request log: after a reload, the new process's, at once
        (the old one, still holding the connection, would otherwise live on to hard-stop-after)."""
        if self.request_log:
            self.request_log.cancel()
        self.request_log = asyncio.create_task(follow(
            self.api.address, lambda line: self.durations.record(line, self.slos), self._request_log_failed))

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
        applied, failed = apply_changes(self.api, result.changes)
        for change in applied:
            self.metrics.changes.labels(change.kind).inc()
            log.info("%s %s/%s", change.kind, change.backend, change.server)
        busy = set()
        for change, err in failed:
            if isinstance(err, ServerBusy):  # retried each pass until its connections end; said once
                busy.add((change.backend, change.server))
                if (change.backend, change.server) not in self.busy:
                    log.info("%s/%s: deleted once its connections end (%s)", change.backend, change.server, err)
                continue
            self.metrics.errors.labels("apply").inc()
            self.last_error = str(err)
            log.warning("apply %s: %s", change, err)
        self.busy = busy
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
            outliers = asyncio.create_task(self._eject_outliers())
            self._follow_request_log()
            try:
                while True:
                    self._sync_watchers(session)
                    self._sync_rotation(session)
                    self._sync_intentions_watch(session)
                    try:
                        await asyncio.wait_for(self.wake.wait(), self.resync)
                    except asyncio.TimeoutError:
                        pass
                    self.wake.clear()
                    if await asyncio.to_thread(self.check_config):
                        self._follow_request_log()
                    await asyncio.to_thread(self.sync)
                    await asyncio.to_thread(self.apply_intentions)
                    await asyncio.to_thread(self.apply_inbound)
                    self.synced.set()
            finally:
                for task in [*self.watchers.values(), outliers,
                             *(t for t in (self.rotation, self.intentions_watch, self.request_log) if t)]:
                    task.cancel()

    # --- HTTP ----------------------------------------------------------------------------------

    def status(self) -> dict:
        return {"status": "ok" if self.haproxy_ok else "haproxy unreachable",
                "haproxy": self.haproxy_ok, "consul": self.consul_ok,
                "services": len(self.watched), "known": len(self.endpoints),
                "shape": self.loaded_hash, "certificate_until": self.certificate_until,
                "deleting": [f"{backend}/{server}" for backend, server in sorted(self.busy)],
                "last_error": self.last_error}

    def app(self) -> web.Application:
        async def health(_: web.Request) -> web.Response:
            # Consul down is degraded, not unhealthy: the last-known-good state keeps serving.
            return web.json_response(self.status(), status=200 if self.haproxy_ok else 503)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.metrics.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def scrape_targets(request: web.Request) -> web.Response:
            services = request.query.getall("service", [])
            try:
                catalog = await read_catalog(self.consul, bearer_token(request.headers.get("Authorization")), services)
            except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, ValueError) as err:
                # Prometheus keeps the targets of its last good refresh while this fails.
                self.metrics.errors.labels("scrape-targets").inc()
                return web.json_response({"error": f"the registry did not list its services: {err}"}, status=502)
            return web.json_response(target_groups(catalog, self.mesh, services))

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/metrics", metrics)
        app.router.add_get(scrape_meta.TARGETS_PATH, scrape_targets)
        return app


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
    haproxy_runtime: Annotated[str, typer.Option("--haproxy-runtime", help="HAProxy runtime API: a unix socket's path, or host:port.")],
    listen: Annotated[str, typer.Option("--listen", help="host:port for GET /health, /metrics and Prometheus' targets.")],
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
    try:
        parse_duration(wait)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--wait") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    token = read_token(token_file, missing_ok=True)
    controller = Controller(consul, RuntimeApi(haproxy_runtime), haproxy_config, token=token,
                            pidfile=haproxy_pidfile, mesh=mesh, drain_grace=drain_grace, wait=wait)
    asyncio.run(serve(controller, listen))
