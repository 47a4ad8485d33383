"""The agent: durable store + check runners + blocking-query hub, and the operations the API calls."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshspec.common.connect_certs import DEFAULT_LEAF_TTL
from meshspec.runtime.agent.acl import Acl
from meshspec.runtime.agent.blocking import Hub
from meshspec.runtime.agent.checks import Runners
from meshspec.runtime.agent.connect_ca import Leaves, open_ca
from meshspec.runtime.agent.definitions import parse_check
from meshspec.runtime.agent.errors import ConsulError, not_found
from meshspec.runtime.agent.sessions import SERF_CHECK_ID, Sessions
from meshspec.runtime.agent.store import Store
from meshspec.runtime.agent.telemetry import LogFanOut, Metrics

log = logging.getLogger("meshspec.agent")

MIN_DEREGISTER_AFTER = 60.0  # Consul's floor for DeregisterCriticalServiceAfter
NODE_MAINTENANCE = "_node_maintenance"
SERVICE_MAINTENANCE = "_service_maintenance:"
NODE_MAINTENANCE_DEFAULT = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
SERVICE_MAINTENANCE_DEFAULT = ("Maintenance mode is enabled for this service, but no reason was provided. "
                               "This is a default message.")
REAP_INTERVAL = 1.0


@dataclass(frozen=True)
class Config:
    data_dir: Path
    node_name: str
    datacenter: str = "dc1"
    bind: str = "127.0.0.1"
    port: int = 8500
    token: str | None = None
    enable_script_checks: bool = False
    # Consul's acl.token_min_expiration_ttl and token_max_expiration_ttl, in seconds
    token_min_expiration_ttl: float = 60.0
    token_max_expiration_ttl: float = 24 * 3600.0
    # The Connect CA: the operator's root and key (Consul's ca_config root_cert and private_key),
    # else one the agent generates into data_dir; the SPIFFE trust domain (default: the root's, else
    # `<cluster ID>.consul`); the leaves' lifetime in seconds (Consul's leaf_cert_ttl).
    ca_cert: Path | None = None
    ca_key: Path | None = None
    trust_domain: str | None = None
    leaf_cert_ttl: float = DEFAULT_LEAF_TTL

    @property
    def advertise(self) -> str:
        return "127.0.0.1" if self.bind in ("0.0.0.0", "::", "") else self.bind


def services_to_reap(checks: dict[str, dict[str, Any]], critical_since: dict[str, float], now: float) -> set[str]:
    """Services one of whose checks has been critical longer than its DeregisterCriticalServiceAfter."""
    doomed = set()
    for check_id, since in critical_since.items():
        check = checks.get(check_id)
        if not check or not check["ServiceID"] or check["DeregisterCriticalServiceAfter"] <= 0:
            continue
        if now - since > max(check["DeregisterCriticalServiceAfter"], MIN_DEREGISTER_AFTER):
            doomed.add(check["ServiceID"])
    return doomed


def maintenance_check(check_id: str, name: str, service_id: str, notes: str) -> dict[str, Any]:
    """A maintenance check as Consul shows it: critical, the reason in its Notes, run by nothing."""
    check = parse_check({"CheckID": check_id, "Name": name, "Notes": notes, "ServiceID": service_id,
                         "Status": "critical", "TTL": "1s"}, script_checks=False)
    return {**check, "TTL": 0.0, "Type": "maintenance"}


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = Store(config.data_dir)
        self.hub = Hub()
        self.store.listeners.append(self.hub.notify)
        self.acl = Acl(config.token, self.store)
        self.ca = open_ca(config.data_dir, config.ca_cert, config.ca_key, config.trust_domain, self.store.take_index,
                          dt.datetime.now(dt.timezone.utc))
        self.leaves = Leaves(self.ca, config.datacenter, config.leaf_cert_ttl, self.store.take_index)
        self.runners = Runners(self.report)
        self.sessions = Sessions(self.store, self._check_status)
        self.critical_since: dict[str, float] = {}
        self.started = time.time()
        self._reaper: asyncio.Task | None = None
        self.metrics = Metrics()
        self.log_streams: LogFanOut | None = None
        self.leaving: asyncio.Event | None = None  # set by /v1/agent/leave: the agent shuts down

    async def start(self) -> None:
        self.leaving = asyncio.Event()
        self.log_streams = LogFanOut(asyncio.get_running_loop())
        logging.getLogger("meshspec").addHandler(self.log_streams)
        await self.runners.open()
        self._run_stored()
        self._reaper = asyncio.create_task(self._reap_forever())

    def _run_stored(self) -> None:
        """Run what the store holds: every check's runner (or TTL timer), every session's TTL."""
        now = time.monotonic()
        for check in self.store.checks.values():
            if check["Status"] == "critical":
                self.critical_since[check["CheckID"]] = now
            self.runners.start(check)
        self.sessions.start()

    def restore(self, state: dict[str, Any]) -> None:
        """Replace all state with a snapshot's, then run it as a restarted agent would."""
        for check_id in list(self.store.checks):
            self.runners.stop(check_id)
        self.sessions.stop()
        self.critical_since.clear()
        self.store.restore(state)
        self._run_stored()

    async def stop(self) -> None:
        if self.log_streams is not None:
            logging.getLogger("meshspec").removeHandler(self.log_streams)
        if self._reaper:
            self._reaper.cancel()
        self.sessions.stop()
        await self.runners.close()
        self.store.close()

    # ---- services ------------------------------------------------------------------------------
    def register_service(self, service: dict[str, Any], checks: list[dict[str, Any]], replace: bool) -> None:
        new_ids = {c["CheckID"] for c in checks}
        previous = [cid for cid, c in self.store.checks.items() if c["ServiceID"] == service["ID"]]
        drop = [cid for cid in previous if cid not in new_ids] if replace else []
        self.store.put_service(service, checks, drop)
        for cid in drop:
            self._forget_check(cid)
        for check in checks:
            self._track(self.store.checks[check["CheckID"]])
            self.runners.start(self.store.checks[check["CheckID"]])
        self._sync_aliases()

    def service(self, service_id: str) -> dict[str, Any]:
        service = self.store.services.get(service_id)
        if service is None:
            raise not_found(
                f"Unknown service ID {service_id!r}. Ensure that the service ID is passed, not the service name."
            )
        return service

    def deregister_service(self, service_id: str) -> None:
        """Remove a service, its checks, and the sidecar the agent registered for it."""
        self.service(service_id)
        sidecars = [sid for sid, s in self.store.services.items() if s.get("SidecarOf") == service_id]
        for sid in [service_id, *sidecars]:
            for cid in self.store.delete_service(sid):
                self._forget_check(cid)
        self._sync_aliases()

    # ---- checks --------------------------------------------------------------------------------
    def check(self, check_id: str) -> dict[str, Any]:
        check = self.store.checks.get(check_id)
        if check is None:
            raise not_found(f"Unknown check ID {check_id!r}. Ensure that the check ID is passed, not the check name.")
        return check

    def register_check(self, check: dict[str, Any]) -> None:
        if check["ServiceID"] and check["ServiceID"] not in self.store.services:
            raise ConsulError(404, f'ServiceID "{check["ServiceID"]}" does not exist')  # Consul's NotFound, %q
        self.store.put_check(check)
        stored = self.store.checks[check["CheckID"]]
        self._track(stored)
        self.runners.start(stored)
        self._sync_aliases()

    def deregister_check(self, check_id: str) -> None:
        self.check(check_id)
        self.store.delete_check(check_id)
        self._forget_check(check_id)
        self._sync_aliases()

    # ---- maintenance mode (the operator's drain) -------------------------------------------------
    def set_maintenance(self, enable: bool, reason: str, service_id: str = "") -> None:
        """Consul's maintenance mode: a critical check, on the node (every service of it leaves
        the healthy set) or on one service, held until disabled; nothing probes it."""
        if service_id:
            if service_id not in self.store.services:
                raise ConsulError(404, f'No service registered with ID "{service_id}"')
            check_id, name, default = SERVICE_MAINTENANCE + service_id, "Service Maintenance Mode", SERVICE_MAINTENANCE_DEFAULT
        else:
            check_id, name, default = NODE_MAINTENANCE, "Node Maintenance Mode", NODE_MAINTENANCE_DEFAULT
        if not enable:
            if check_id in self.store.checks:
                self.deregister_check(check_id)
            return
        if check_id in self.store.checks:
            return  # already in maintenance: Consul keeps the first reason
        self.register_check(maintenance_check(check_id, name, service_id, reason or default))

    def update_ttl(self, check_id: str, status: str, output: str) -> None:
        check = self.check(check_id)
        if check["Type"] != "ttl":
            raise ConsulError(400, f"CheckID {check_id!r} does not have associated TTL")
        self.runners.reset_ttl(check)
        self.report(check_id, status, output)

    def report(self, check_id: str, status: str, output: str) -> None:
        """A check result from a runner or a TTL update."""
        if check_id not in self.store.checks:
            return
        if self._set_status(check_id, status, output):
            self._sync_aliases()  # only a change of status moves an alias (renewals are the hot path)

    def _set_status(self, check_id: str, status: str, output: str) -> bool:
        """Record a result; True when the status changed (sessions resting on the check learn of it)."""
        changed = self.store.set_check_status(check_id, status, output)
        self._track(self.store.checks[check_id])
        if changed:
            self.sessions.check_changed(check_id, status)
        return changed

    def _sync_aliases(self) -> None:
        """Keep every alias check at the worst status of the service (or node) it mirrors, as
        Consul's alias checks do; a service that is not registered is critical."""
        for check in [c for c in self.store.checks.values() if c["Type"] == "alias"]:
            if check["AliasService"]:
                if check["AliasService"] not in self.store.services:
                    status, output = "critical", f"Service {check['AliasService']} could not be found on node"
                    self._aliased(check, status, output)
                    continue
                mirrored = [c for c in self.store.checks.values()
                            if c["ServiceID"] == check["AliasService"] and c["Type"] != "alias"]
            else:
                mirrored = [c for c in self.store.checks.values() if not c["ServiceID"]]
            statuses = {c["Status"] for c in mirrored}
            status = next((s for s in ("critical", "warning") if s in statuses), "passing")
            self._aliased(check, status, "All checks passing." if status == "passing" else f"Aliased check is {status}.")

    def _aliased(self, check: dict[str, Any], status: str, output: str) -> None:
        if check["Status"] != status or check["Output"] != output:
            self._set_status(check["CheckID"], status, output)

    def _check_status(self, check_id: str) -> str | None:
        if check_id == SERF_CHECK_ID:
            return "passing"  # this node's own liveness: it answers, so it is alive
        check = self.store.checks.get(check_id)
        return check["Status"] if check else None

    def _track(self, check: dict[str, Any]) -> None:
        if check["Status"] == "critical":
            self.critical_since.setdefault(check["CheckID"], time.monotonic())
        else:
            self.critical_since.pop(check["CheckID"], None)

    def _forget_check(self, check_id: str) -> None:
        self.runners.stop(check_id)
        self.critical_since.pop(check_id, None)
        self.sessions.check_changed(check_id, None)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            for service_id in services_to_reap(self.store.checks, self.critical_since, time.monotonic()):
                if service_id in self.store.services:
                    log.info("deregistering service %s: critical past DeregisterCriticalServiceAfter", service_id)
                    self.deregister_service(service_id)
