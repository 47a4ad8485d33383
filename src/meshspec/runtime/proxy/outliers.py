"""Outlier ejection (pure): a server whose requests keep being taken away from it leaves rotation.

HAProxy's own breaker (`observe layer7 error-limit N on-error mark-down`) counts the answers a
server gives. A request that outlives `timeout server` and is retried on another server
(retry-on response-timeout, with redispatch) is not counted (measured: a SIGSTOPped replica stayed
in rotation for the whole 20 s hang, every third request waiting out the timeout). Envoy's outlier
detection on consecutive gateway failures is the model: the controller reads each server's
counters of requests retried and redispatched away from it (`show stat`: wretr + wredis) and of
its answers, and `errors` failures with no answer between them (the breaker's own setting) open
the breaker as HAProxy's would: `set server B/S health down`. HAProxy's checks then re-probe it
every `downinter` (the breaker's cooldown) and `rise` good checks bring it back; Consul's state is
not touched, so the controller's reconcile leaves the server alone (its admin state stays ready).

Never the last server of a backend in rotation: when every server fails, ejecting them would turn
slow answers into no answers (Envoy's max_ejection_percent).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerStats:
    """One server's row of `show stat`: the counters outlier ejection reads."""

    backend: str
    name: str
    failed: int  # wretr + wredis: requests retried or redispatched away from it
    answered: int  # responses it gave, 1xx to 4xx (a 5xx is HAProxy's breaker's to count)
    in_rotation: bool  # status UP (a server going down, "UP 1/2", still takes requests)
    host: str = ""  # the address it connects to, without the port
    maint: bool = False  # status MAINT: the registry's word (critical), or a spare slot


def parse_stat(text: str) -> list[ServerStats]:
    """The server rows of `show stat` (CSV, a `# pxname,svname,...` header)."""
    rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
    servers = []
    for row in rows:
        if row.get("type") != "2":  # 0 frontend, 1 backend, 2 server, 3 listener
            continue
        servers.append(ServerStats(row["pxname"], row["svname"], _total(row, "wretr", "wredis"),
                                   _total(row, "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx"),
                                   row.get("status", "").startswith("UP"), (row.get("addr") or "").rpartition(":")[0],
                                   row.get("status", "").startswith("MAINT")))
    return servers


def _total(row: dict[str, str], *keys: str) -> int:
    return sum(int(row.get(k) or 0) for k in keys)


def breakers_of(shape: dict) -> dict[str, int]:
    """backend -> the failures in a row that eject one of its servers: the spec's circuit breaker
    (`errors`) where it is enabled, read from haproxy.cfg's shape."""
    out = {}
    for backend, spec in shape.get("backends", {}).items():
        breaker = spec.get("routing", {}).get("circuit_breaker", {})
        if breaker.get("enabled"):
            out[backend] = int(breaker["errors"])
    return out


class Outliers:
    """Failures in a row per server, across reads of `show stat`. Counters that went down (a reload
    started a new process) start the count again."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], ServerStats] = {}
        self.streak: dict[tuple[str, str], int] = {}

    def update(self, stats: list[ServerStats], breakers: dict[str, int]) -> list[tuple[str, str]]:
        """The (backend, server)s to eject now."""
        in_rotation = Counter(s.backend for s in stats if s.in_rotation)
        ejected = []
        for s in stats:
            key = (s.backend, s.name)
            before, self.last[key] = self.last.get(key), s
            if s.backend not in breakers or before is None:
                continue
            failed, answered = s.failed - before.failed, s.answered - before.answered
            if failed < 0 or answered < 0 or not s.in_rotation:
                self.streak.pop(key, None)
                continue
            # An answer in the same read may have come before the failures: count those alone.
            streak = failed if answered else self.streak.get(key, 0) + failed
            self.streak[key] = streak
            if streak >= breakers[s.backend] and in_rotation[s.backend] > 1:
                ejected.append(key)
                in_rotation[s.backend] -= 1
                self.streak.pop(key)
        return ejected


def lost_hosts(stats: list[ServerStats], shape: dict) -> set[str]:
    """The addresses of the other hosts whose proxy fails its check (the shape's `peers.hosts`:
    check backend -> address): a host cut off, or whose proxy is gone."""
    hosts = (shape.get("peers") or {}).get("hosts", {})
    return {hosts[s.backend] for s in stats if s.backend in hosts and not s.in_rotation}


def on_lost_hosts(stats: list[ServerStats], shape: dict) -> list[tuple[str, str]]:
    """The (backend, server)s of the routed services still in rotation on a lost host: each one's
    every request would wait out `timeout connect` first. Unlike an outlier, a lost host's last
    server goes too: nothing on it can answer."""
    lost = lost_hosts(stats, shape)
    backends = shape.get("backends", {})
    return [(s.backend, s.name) for s in stats if s.backend in backends and s.in_rotation and s.host in lost]


def rejoined(ejected: dict[tuple[str, str], str], stats: list[ServerStats], shape: dict) -> list[tuple[str, str]]:
    """Of the servers ejected for their host's loss (`ejected`: (backend, server) -> that host's
    address), those whose host's proxy passes its check again and that are still out of rotation
    and not in maintenance: the ejection is undone (HAProxy's checks take it from there). Left to
    HAProxy's checks alone, a server forced down came back at its first check after `downinter`,
    the breaker's cooldown (10 s): up to that long after its host did."""
    lost = lost_hosts(stats, shape)
    by_key = {(s.backend, s.name): s for s in stats}
    return [key for key, host in ejected.items()
            if host not in lost and key in by_key and not by_key[key].in_rotation and not by_key[key].maint]
