"""Consul's sessions: what a KV lock is held by, and what happens to the lock when its holder goes.

A session names a node and the health checks it rests on (`NodeChecks`, default `serfHealth`;
`ServiceChecks`), an optional TTL the holder must renew, a `Behavior` for the keys it holds
when it ends (`release`: unlock them, `delete`: delete them) and a `LockDelay`. It ends when it is
destroyed, when its TTL runs out (Consul allows twice the TTL after the last renewal), or when one
of its checks turns critical or is deregistered. A key that an ended session held cannot be
acquired for the session's lock delay (at most 60 s): a holder that merely looks dead gets that
long to notice it lost the lock before another one takes it. A KV `release` is not an end: it sets
no delay.

Sessions are durable (the store); their TTL timers and lock delays live in memory, as on a Consul
leader: an agent that restarts gives every TTL session a whole TTL again, and forgets delays.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from meshspec.common.durations import parse_duration
from meshspec.runtime.agent.definitions import normalize
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.store import Store

log = logging.getLogger("meshspec.agent.sessions")

SERF_CHECK_ID = "serfHealth"
DEFAULT_LOCK_DELAY = 15.0
MAX_LOCK_DELAY = 60.0
TTL_MIN, TTL_MAX = 10.0, 86400.0  # Consul's session_ttl_min default, and SessionTTLMax
TTL_RANGE = "[10s=24h0m0s]"
TTL_MULTIPLIER = 2  # Consul invalidates a TTL session only after twice its TTL
# A bare number below this is seconds, not nanoseconds (Consul's lockDelayMinThreshold: users send 5).
LOCK_DELAY_SECONDS_BELOW = 1000
BEHAVIORS = ("release", "delete")
SESSION_FIELDS = ("ID", "Name", "Node", "LockDelay", "Behavior", "TTL", "Checks", "NodeChecks", "ServiceChecks")
_SESSION_KEYS = {f.lower(): f for f in SESSION_FIELDS}


def parse_session(raw: Any, node_name: str) -> dict[str, Any]:
    """A /v1/session/create body (None: no body) → the session to store, or Consul's error."""
    body = normalize(raw, _SESSION_KEYS, "Session") if raw is not None else {}
    behavior = body.get("Behavior") or "release"
    if behavior not in BEHAVIORS:
        raise ConsulError(500, f"Invalid Behavior setting '{behavior}'")
    ttl = body.get("TTL") or ""
    if ttl:
        try:
            seconds = parse_duration(str(ttl))
        except ValueError as err:
            raise ConsulError(500, f"Session TTL '{ttl}' invalid: {err}") from None
        if seconds != 0 and not TTL_MIN <= seconds <= TTL_MAX:
            raise ConsulError(500, f"Invalid Session TTL '{round(seconds * 1e9)}', must be between {TTL_RANGE}")
    node = body.get("Node") or node_name
    if node != node_name:
        raise ConsulError(500, "Missing node registration")
    node_checks = body.get("NodeChecks")
    if node_checks is None:
        # `Checks` (deprecated) still names node checks; with neither, the session rests on serfHealth.
        node_checks = body["Checks"] if "Checks" in body else [SERF_CHECK_ID]
    service_checks = body.get("ServiceChecks")
    return {
        "ID": str(uuid.uuid4()),
        "Name": str(body.get("Name") or ""),
        "Node": node,
        "LockDelay": round(_lock_delay(body.get("LockDelay")) * 1e9),
        "Behavior": behavior,
        "TTL": str(ttl),
        "NodeChecks": [str(c) for c in node_checks or []] or None,
        "ServiceChecks": [_service_check(c) for c in service_checks] if service_checks else None,
    }


def _lock_delay(raw: Any) -> float:
    if raw is None:
        return DEFAULT_LOCK_DELAY
    try:
        seconds = parse_duration(raw)
    except ValueError as err:
        raise ConsulError(400, f"Request decode failed: {err}") from None
    if seconds * 1e9 < LOCK_DELAY_SECONDS_BELOW:  # 5 (or "5ns") means 5 s, as in Consul
        seconds *= 1e9
    return seconds


def _service_check(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        check_id = next((v for k, v in raw.items() if k.lower() == "id"), "")
        return {"ID": str(check_id), "Namespace": ""}
    return {"ID": str(raw), "Namespace": ""}


def check_ids(session: dict[str, Any]) -> list[str]:
    """Every check the session rests on."""
    return [*(session["NodeChecks"] or []), *(c["ID"] for c in session["ServiceChecks"] or [])]


class Sessions:
    """The sessions' timers and the keys' lock delays, over the store's durable sessions."""

    def __init__(self, store: Store, check_status: Callable[[str], str | None]) -> None:
        self.store = store
        self._check_status = check_status  # a check's status, or None when it is not registered
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._lock_delays: dict[str, float] = {}  # key -> monotonic time its delay ends

    def start(self) -> None:
        """Arm every stored TTL session with a whole TTL (a new leader's grace)."""
        for session in list(self.store.sessions.values()):
            self._arm(session)

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def create(self, session: dict[str, Any]) -> dict[str, Any]:
        for check_id in check_ids(session):
            status = self._check_status(check_id)
            if status is None:
                raise ConsulError(500, f"Missing check '{check_id}' registration")
            if status == "critical":
                raise ConsulError(500, f"Check '{check_id}' is in critical state")
        stored = self.store.put_session(session)
        self._arm(stored)
        return stored

    def get(self, session_id: str) -> dict[str, Any] | None:
        return self.store.sessions.get(session_id)

    def renew(self, session_id: str) -> dict[str, Any] | None:
        session = self.store.sessions.get(session_id)
        if session is not None:
            self._arm(session)
        return session

    def destroy(self, session_id: str, why: str = "destroyed") -> None:
        """End a session: its Behavior on the keys it holds, and its lock delay on each of them."""
        session = self.store.sessions.get(session_id)
        if session is None:
            return
        self.ended(session, self.store.delete_session(session_id), why)

    def ended(self, session: dict[str, Any], held: list[str], why: str) -> None:
        """A session the store no longer holds (destroyed here, or deleted by a transaction): its
        timer stops, and the keys it held enter its lock delay."""
        timer = self._timers.pop(session["ID"], None)
        if timer is not None:
            timer.cancel()
        delay = min(session["LockDelay"] / 1e9, MAX_LOCK_DELAY)
        if delay > 0:
            until = time.monotonic() + delay
            for key in held:
                self._lock_delays[key] = until
        log.info("session %s (%s) %s; %d key(s) %s", session["ID"], session["Name"] or "unnamed", why, len(held),
                 "deleted" if session["Behavior"] == "delete" else "released")

    def lock_delayed(self, key: str) -> bool:
        """True while `key` is in the lock delay of a session that ended holding it."""
        until = self._lock_delays.get(key)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self._lock_delays[key]
            return False
        return True

    def check_changed(self, check_id: str, status: str | None) -> None:
        """A check turned `status` (None: deregistered): end the sessions resting on it unless it passes."""
        if status not in (None, "critical"):
            return
        for session in [s for s in self.store.sessions.values() if check_id in check_ids(s)]:
            self.destroy(session["ID"], f"invalidated: check {check_id} is {status or 'deregistered'}")

    def _arm(self, session: dict[str, Any]) -> None:
        if not session["TTL"]:
            return
        seconds = parse_duration(session["TTL"])
        if seconds <= 0:
            return
        old = self._timers.pop(session["ID"], None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[session["ID"]] = loop.call_later(
            seconds * TTL_MULTIPLIER, self.destroy, session["ID"], f"invalidated: TTL {session['TTL']} expired")
