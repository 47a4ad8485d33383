"""What the agent tells about itself: its metrics (`/v1/agent/metrics`) and its log as it is written
(`/v1/agent/monitor`).

Metrics, measured, never made up: the state store's sizes as Consul's `consul.state.*` gauges,
computed when asked, and every HTTP request's duration as Consul's `consul.api.http` timer, by
method and route. Consul's in-memory sink shows the last 10-second interval; these aggregate since
the agent started (README). The Prometheus form names them as Consul's Prometheus sink does
(`consul_state_nodes`, `consul_api_http` as a summary).

The log: a handler on meshspec's loggers hands every record to each monitor stream, as Consul's
agent streams its own log lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import generate_latest

LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}
_CONSUL_LEVEL = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN", logging.ERROR: "ERROR",
                 logging.CRITICAL: "ERROR"}


@dataclass
class Timer:
    """One timer's aggregate, as go-metrics keeps a sample: count, sum, min, max, sum of squares (ms)."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = 0.0
    squares: float = 0.0

    def add(self, ms: float) -> None:
        self.count += 1
        self.total += ms
        self.low, self.high = min(self.low, ms), max(self.high, ms)
        self.squares += ms * ms

    def shown(self, name: str, labels: dict[str, str], seconds: float) -> dict[str, Any]:
        mean = self.total / self.count
        stddev = math.sqrt(max(self.squares / self.count - mean * mean, 0.0))
        return {"Name": name, "Count": self.count, "Rate": self.total / max(seconds, 1e-9) / 1000,
                "Sum": self.total, "Min": self.low, "Max": self.high, "Mean": mean, "Stddev": stddev, "Labels": labels}


@dataclass
class Metrics:
    started: float = field(default_factory=time.time)
    http: dict[tuple[str, str], Timer] = field(default_factory=dict)

    def observe_http(self, method: str, route: str, seconds: float) -> None:
        """A request's duration, by method and route (`/v1/kv/{key}` -> `v1_kv_`, as Consul labels it)."""
        path = route.strip("/").split("{", 1)[0].replace("/", "_")
        self.http.setdefault((method, path), Timer()).add(seconds * 1000)

    def as_json(self, gauges: dict[str, float]) -> dict[str, Any]:
        now = time.time()
        return {"Timestamp": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(now)),
                "Gauges": [{"Name": n, "Value": v, "Labels": {}} for n, v in sorted(gauges.items())],
                "Points": [], "Counters": [],
                "Samples": [t.shown("consul.api.http", {"method": m, "path": p}, now - self.started)
                            for (m, p), t in sorted(self.http.items())]}

    def as_prometheus(self, gauges: dict[str, float]) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self, gauges))
        return generate_latest(registry)


class _Collector:
    def __init__(self, metrics: Metrics, gauges: dict[str, float]) -> None:
        self.metrics, self.gauges = metrics, gauges

    def collect(self):
        for name, value in sorted(self.gauges.items()):
            yield GaugeMetricFamily(name.replace(".", "_"), name, value=value)
        summary = SummaryMetricFamily("consul_api_http", "consul.api.http, milliseconds", labels=["method", "path"])
        for (method, path), timer in sorted(self.metrics.http.items()):
            summary.add_metric([method, path], count_value=timer.count, sum_value=timer.total)
        yield summary


def state_gauges(store: Any) -> dict[str, float]:
    """Consul's consul.state.* gauges from the store, this node counted among the nodes."""
    external = [s for d in store.catalog_nodes.values() for s in d["Services"].values()]
    instances = [*store.services.values(), *external]
    return {"consul.state.nodes": 1 + len(store.catalog_nodes),
            "consul.state.services": len({s["Service"] for s in instances}),
            "consul.state.service_instances": len(instances),
            "consul.state.kv_entries": len(store.kv),
            "consul.state.config_entries": len(store.config_entries)}


class LogFanOut(logging.Handler):
    """Hands each log record to every monitor stream's queue, on the event loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.DEBUG)
        self.loop = loop
        self.streams: set[tuple[asyncio.Queue, int]] = set()

    def emit(self, record: logging.LogRecord) -> None:
        for queue, level in list(self.streams):
            if record.levelno >= level:
                self.loop.call_soon_threadsafe(_offer, queue, record)


def _offer(queue: asyncio.Queue, record: logging.LogRecord) -> None:
    """A client that reads too slowly loses lines rather than holding the agent's memory."""
    if not queue.full():
        queue.put_nowait(record)


def log_line(record: logging.LogRecord, as_json: bool) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
    level, module = _CONSUL_LEVEL.get(record.levelno, "INFO"), record.name.removeprefix("meshspec.")
    if as_json:
        return json.dumps({"@level": level.lower(), "@message": record.getMessage(), "@module": module,
                           "@timestamp": when}) + "\n"
    return f"{when} [{level}]  {module}: {record.getMessage()}\n"
