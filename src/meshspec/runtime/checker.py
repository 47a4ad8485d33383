"""`meshspec-checker`: one long-lived process per host that runs every functional probe of the
host's instances and reports each result to Consul as a TTL check update.

Why TTL checks: Consul's native checks cannot speak MCP, SQL, RESP or AMQP, and script checks
start a process per check per interval (an Erlang VM for rabbitmq-diagnostics, a Python for each
MCP probe): most of a core on an idle mesh. A TTL check needs nothing from the agent but a timer,
so this design works as it is against a real Consul cluster: the checker PUTs
/v1/agent/check/update/<id> with the mesh's token. When the checker stops, nobody renews the TTLs
and every check turns critical within its TTL: a check never stays passing without a probe.

Each check runs in its own thread (the probes block on sockets; threads that sleep cost nothing),
through `probes.gate.Gate`: a status changes only after SuccessBeforePassing successes or
FailuresBeforeCritical failures in a row, so one slow probe on a busy host does not take a
server out. Every result is still reported (the standing status, with the latest output) so the
TTL is renewed; the agent wakes its watchers only when a status changes.

An MCP check keeps one session with its server (`probes.mcp.KeptSession`): a tools/list on it
each interval, a fresh handshake whenever it fails, and a DELETE when the checker stops.

The checks file is rendered by the deploy (`meshspec.render.checker`); supervisord restarts the
checker when it changes.

The checker serves no HTTP: every few seconds it writes its metrics (each probe's result and
duration, each check's reported status) with prometheus_client's `write_to_textfile` into
`--metrics-dir`, which the host's node-exporter exports with its textfile collector, the standard
way for a process that serves nothing (node-exporter's `node_textfile_mtime_seconds` then says
when the checker last wrote: an alert when it stops).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile

from meshspec.common.consul_token import read_token
from meshspec.common.damping import damped_output
from meshspec.runtime.probes import protocols
from meshspec.runtime.probes.gate import CRITICAL, PASSING, Gate
from meshspec.runtime.probes.mcp import KeptSession
from meshspec.runtime.probes.owner import Owner, Tracker

log = logging.getLogger("meshspec.checker")
#: How soon a report the agent refused (check not registered yet, agent restarting) is retried.
RETRY_SECONDS = 1.0
#: How long a stopping checker waits for its checks' threads to end their MCP sessions.
STOP_GRACE_SECONDS = 2.0
#: How often the metrics file is rewritten: within one of Prometheus' scrapes (15 s).
WRITE_SECONDS = 5.0
METRICS_FILE = "checker.prom"


class Metrics:
    """What the checker measures, by check (`service:<instance id>`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.duration = Histogram("meshspec_checker_probe_duration_seconds", "Each probe's run, by check",
                                  ["check_id"], registry=self.registry,
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.probes = Counter("meshspec_checker_probes_total", "Probes run, by check and result (ok or failed)",
                              ["check_id", "result"], registry=self.registry)
        self.passing = Gauge("meshspec_checker_check_passing",
                             "1 while the status the checker reports for the check is passing (flap damping "
                             "applied), 0 while critical", ["check_id"], registry=self.registry)
        self.refused = Counter("meshspec_checker_reports_refused_total",
                               "Results the registry's agent did not take, by check", ["check_id"],
                               registry=self.registry)

    def probed(self, check_id: str, seconds: float, ok: bool, status: str, taken: bool) -> None:
        self.duration.labels(check_id).observe(seconds)
        self.probes.labels(check_id, "ok" if ok else "failed").inc()
        self.passing.labels(check_id).set(1 if status == PASSING else 0)
        if not taken:
            self.refused.labels(check_id).inc()

    def write(self, directory: Path) -> None:
        """The whole file, replaced at once (a temporary file renamed: node-exporter never reads half)."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(directory / METRICS_FILE), self.registry)
        except OSError as err:
            log.warning("could not write the metrics file in %s: %s", directory, err)


@dataclass(frozen=True)
class Check:
    check_id: str
    probe: dict
    interval: float  # seconds
    timeout: float
    success_before_passing: int
    failures_before_critical: int

    @classmethod
    def from_json(cls, raw: dict) -> Check:
        return cls(raw["check_id"], raw["probe"], raw["interval_ms"] / 1000, raw["timeout_ms"] / 1000,
                   raw["success_before_passing"], raw["failures_before_critical"])


class Reporter:
    """Consul's agent API for TTL checks, with the mesh's token."""

    def __init__(self, consul: str, token: str | None) -> None:
        base = consul if "://" in consul else f"http://{consul}"
        headers = {"X-Consul-Token": token} if token else {}
        self._client = httpx.Client(base_url=base, headers=headers, timeout=5.0, trust_env=False)
        self._lock = threading.Lock()  # one connection, shared by every check's thread

    def statuses(self) -> dict[str, str]:
        """The status Consul holds for each check now ({} when the agent does not answer)."""
        try:
            with self._lock:
                response = self._client.get("/v1/agent/checks")
            response.raise_for_status()
            return {check_id: c["Status"] for check_id, c in response.json().items()}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
            log.warning("could not read the checks' current statuses: %s", err)
            return {}

    def update(self, check_id: str, status: str, output: str) -> bool:
        """True when the agent took the result (a 404 means the deploy has not registered it yet)."""
        try:
            with self._lock:
                response = self._client.put(f"/v1/agent/check/update/{check_id}",
                                            json={"Status": status, "Output": output})
        except httpx.HTTPError as err:
            log.warning("%s: the agent did not take the result: %s", check_id, err)
            return False
        if response.status_code != 200:
            log.warning("%s: the agent answered %s: %s", check_id, response.status_code, response.text.strip()[:200])
        return response.status_code == 200


def run_check(check: Check, reporter: Reporter, stopping: threading.Event, standing: str, metrics: Metrics) -> None:
    """Probe, gate, report, sleep; until `stopping` is set. `standing` is the status Consul holds
    when the checker starts: a restarted checker (its checks file changed) damps from there, so
    one slow probe right after a restart does not turn a passing check critical."""
    gate = Gate(check.success_before_passing, check.failures_before_critical, status=standing)
    owner = check.probe.get("owner")
    tracker = Tracker(Owner(**owner)) if owner else None
    session = KeptSession(check.probe["url"]) if check.probe["kind"] == "mcp" else None
    try:
        _check_until_stopped(check, reporter, stopping, gate, tracker, session, metrics)
    finally:
        if session is not None:
            session.close()  # the server forgets the checker's session now, not when it restarts


def _check_until_stopped(check: Check, reporter: Reporter, stopping: threading.Event, gate: Gate,
                         tracker: Tracker | None, session: KeptSession | None, metrics: Metrics) -> None:
    # Stagger first runs (as Consul does) so checks do not fire in lockstep, by at most a second.
    if stopping.wait(random.random() * min(check.interval, 1.0)):
        return
    while not stopping.is_set():
        started = time.monotonic()
        try:
            result = protocols.run(check.probe, check.timeout, tracker, session)
        except Exception as err:  # a check's thread must survive anything a probe library throws
            log.exception("%s: the probe raised", check.check_id)
            result = protocols.Result(False, f"the probe raised {type(err).__name__}: {err}")
        took = time.monotonic() - started
        before = gate.status
        gate(PASSING if result.ok else CRITICAL)
        output = result.output if gate.status != PASSING or result.ok else (
            damped_output(gate.failures_critical, gate.failures, result.output))
        if gate.status != before:
            log.info("%s: %s -> %s: %s", check.check_id, before, gate.status, result.output)
        taken = reporter.update(check.check_id, gate.status, output)
        metrics.probed(check.check_id, took, result.ok, gate.status, taken)
        pause = check.interval if taken else RETRY_SECONDS
        stopping.wait(max(0.0, pause - (time.monotonic() - started)) if taken else pause)


def load_checks(path: Path) -> tuple[str, list[Check]]:
    raw = json.loads(path.read_text())
    return raw["consul"], [Check.from_json(c) for c in raw["checks"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meshspec-checker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=Path, required=True, help="The checks file the deploy rendered.")
    parser.add_argument("--token-file", type=Path, help="File holding the Consul token.")
    parser.add_argument("--metrics-dir", type=Path, help=f"Where to keep {METRICS_FILE} (node-exporter's "
                        "textfile collector's directory); none: no metrics written.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per probe and report would fill the log
    try:
        consul, checks = load_checks(args.checks)
        token = read_token(args.token_file)
    except (OSError, ValueError, KeyError) as err:
        parser.exit(2, f"meshspec-checker: {args.checks}: {err}\n")
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    reporter, metrics = Reporter(consul, token), Metrics()
    standing = reporter.statuses()
    threads = [threading.Thread(target=run_check, args=(c, reporter, stopping, standing.get(c.check_id, CRITICAL),
                                                        metrics), name=c.check_id, daemon=True) for c in checks]
    for thread in threads:
        thread.start()
    log.info("checking %d instances, reporting to %s", len(checks), consul)
    while not stopping.wait(WRITE_SECONDS if args.metrics_dir else 3600):
        if args.metrics_dir:
            metrics.write(args.metrics_dir)
    # Sleeping checks wake at once and end their MCP sessions; one caught mid-probe is not waited for.
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return 0
