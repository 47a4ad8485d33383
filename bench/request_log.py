"""Request-log bench: what following HAProxy's request log costs, side by side in ONE run. The proxy
writes every request's line to the ring `meshspec-requests` (`log ring@meshspec-requests` in its
global section); mesh-controller follows that ring on the runtime API (`show events ... -w -n`) and
counts each answer in a histogram (runtime/proxy/request_log.py). Three variants, rounds alternating
them (their order rotating) so all see the same machine load; the median of each is printed:
  * reader:  the rendered config, and the controller's follower reading the ring (`follow()` with
    `Durations.record`, as the controller runs it, in a process of its own so its CPU is its own);
  * ring:    the rendered config, no reader (HAProxy still writes each line to the ring);
  * no ring: the rendered config with its `log ring@...` line removed (a second proxy).
For each: throughput (wrk through the proxy, keep-alive) as a ratio of the others'; HAProxy's CPU
seconds (its worker's utime+stime, /proc) per 10,000 requests; and for the reader, its CPU seconds
per 10,000 requests and the lines it counted against the requests HAProxy answered (its frontend's
req_tot) and wrk's: a ring never blocks HAProxy, which drops new lines for a reader that falls behind.

The backend is a second HAProxy answering 200 from memory, so the backend is not the bottleneck.
The proxy's rate limits are off (a single client flooding it would be limited, 429).
Run: .venv/bin/python bench/request_log.py [--seconds 5] [--rounds 3] [--connections 32] [--threads 2]
Needs: haproxy, wrk (Debian packages). Only 127.0.0.1, free ports.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.proxy import BACKEND_CFG, wrk  # noqa: E402
from meshspec.common.request_log import RING  # noqa: E402
from meshspec.plan import Plan  # noqa: E402
from meshspec.render.haproxy import ProxyOptions  # noqa: E402
from meshspec.runtime.proxy.runtime_api import RuntimeApi  # noqa: E402
from tests.proxy.harness import HAProxy, stop_process, write_proxy_files  # noqa: E402
from tests.proxy.meshes import make_mesh, service  # noqa: E402
from tests.support import free_port, listening, wait_until  # noqa: E402

RING_LINE = f"    log ring@{RING} local0 info\n"
# The controller's follower alone, in a process of its own: argv runtime API address, haproxy.cfg.
# It reads the SLOs from the config's shape as the controller does; on SIGUSR1 it prints
# "<answers counted> <lines unread> <errors> <lines HAProxy says it dropped>": for a reader behind,
# HAProxy puts a line "<n> event(s) dropped" in the ring (Durations counts them as dropped).
FOLLOWER = """
import asyncio, signal, sys
from pathlib import Path
from prometheus_client import CollectorRegistry
from meshspec.common.haproxy_shape import read_shape
from meshspec.runtime.proxy.request_log import Durations, follow, slos_of

address, config = sys.argv[1], sys.argv[2]
registry = CollectorRegistry()
durations = Durations(registry)
slos = slos_of(read_shape(Path(config).read_text()))
durations.expect(slos)
errors = []

def report():
    counted = sum(s.value for m in durations.seconds.collect() for s in m.samples if s.name.endswith("_count"))
    print(f"{counted:.0f} {durations.unread._value.get():.0f} {len(errors)} {durations.dropped._value.get():.0f}",
          flush=True)

async def main():
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, report)
    print("ready", flush=True)
    await follow(address, lambda line: durations.record(line, slos), errors.append)

asyncio.run(main())
"""
VARIANTS = ("reader", "ring", "no ring")
TICK = os.sysconf("SC_CLK_TCK")


class RinglessHAProxy(HAProxy):
    """The proxy on its rendered config less the line that logs to the ring."""

    def write_config(self, plan: Plan | None = None, options: ProxyOptions | None = None) -> None:
        super().write_config(plan, options)
        text = self.config.read_text()
        assert RING_LINE in text, "the rendered config logs to no ring?"
        self.config.write_text(text.replace(RING_LINE, ""))


class Follower:
    """The follower's process: its CPU seconds so far, and its counts."""

    def __init__(self, proxy: HAProxy) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", FOLLOWER, proxy.api.address, str(proxy.config)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def counts(self) -> tuple[int, int, int, int]:
        """(answers counted, lines unread, errors, lines HAProxy says it dropped) so far."""
        self.proc.send_signal(signal.SIGUSR1)
        return tuple(int(n) for n in self.proc.stdout.readline().split())

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)


def answered(api: RuntimeApi) -> int:
    """Requests the proxy's frontend `mesh` took in so far (each logs a line)."""
    lines = api.send("show stat -1 1 -1").splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row.get("pxname") == "mesh" and row.get("svname") == "FRONTEND":
            return int(row["req_tot"])
    raise RuntimeError("no frontend `mesh` in show stat")


def drained(follower: Follower, target: int, timeout: float = 15.0) -> tuple[int, int, int, int]:
    """The follower's counts once it has counted `target` answers or stopped counting for a second."""
    deadline, last, still_since = time.monotonic() + timeout, None, time.monotonic()
    while True:
        counts = follower.counts()
        if counts[0] >= target or time.monotonic() > deadline:
            return counts
        if counts != last:
            last, still_since = counts, time.monotonic()
        elif time.monotonic() - still_since > 1.0:
            return counts
        time.sleep(0.1)


def run_round(variant: str, proxy: HAProxy, args: argparse.Namespace) -> dict:
    url = f"{proxy.url}/svc/echo/hello"
    worker = int(proxy.api.info()["Pid"])
    follower = None
    try:
        if variant == "reader":
            follower = Follower(proxy)
            # connected (show events -n: only lines after it): once it counts a request of ours
            wait_until(lambda: httpx.get(url, trust_env=False).status_code == 200 and follower.counts()[0] > 0,
                       10, interval=0.2, what="the follower counting")
            counted0, unread0, errors0, dropped0 = follower.counts()
            follower_cpu0 = follower.cpu()
        haproxy_cpu0, answered0 = cpu_seconds(worker), answered(proxy.api)
        rps, out = wrk(url, args.seconds, args.connections, args.threads)
        assert "Non-2xx" not in out, out  # a flood the proxy limited or refused measures nothing
        sent = int(re.search(r"(\d+) requests in", out).group(1))
        result = {"rps": rps, "sent": sent}
        if follower is not None:
            result["answered"] = answered(proxy.api) - answered0
            counted, unread, errors, dropped = drained(follower, result["answered"])
            result.update(counted=counted - counted0, unread=unread - unread0, errors=errors - errors0,
                          dropped=dropped - dropped0, follower_cpu=follower.cpu() - follower_cpu0)
        result["haproxy_cpu"] = cpu_seconds(worker) - haproxy_cpu0
        result["answered"] = answered(proxy.api) - answered0
        return result
    finally:
        if follower is not None:
            follower.stop()


def per_10k(seconds: float, requests: int) -> float:
    return seconds * 10_000 / requests if requests else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="request-log-bench-") as tmp:
        root = Path(tmp)
        backend_port = free_port()
        (root / "backend.cfg").write_text(BACKEND_CFG.format(port=backend_port))
        backend = subprocess.Popen(["haproxy", "-db", "-f", str(root / "backend.cfg")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proxies: dict[str, HAProxy] = {}
        for name, kind in (("ring", HAProxy), ("no ring", RinglessHAProxy)):
            plan = make_mesh([service("echo", backend_port, 1)], (free_port(), free_port(), free_port()),
                             root / name.replace(" ", "-"), defaults={"routing": {"rate_limit": 0}},
                             proxy={"rate_limits": {"client": 0}})
            write_proxy_files(plan)
            proxies[name] = kind(plan, ProxyOptions(log_target="127.0.0.1:9"))
        proxies["reader"] = proxies["ring"]
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        try:
            wait_until(lambda: listening(backend_port), 10, what="backend")
            for proxy in {id(p): p for p in proxies.values()}.values():
                proxy.start()
                wait_until(lambda: httpx.get(f"{proxy.url}/svc/echo/hello", trust_env=False).status_code == 200,
                           10, what="the proxy answering 200")
            assert RING_LINE in proxies["ring"].config.read_text()
            assert RING_LINE not in proxies["no ring"].config.read_text()
            for r in range(args.rounds):
                for variant in VARIANTS[r % 3:] + VARIANTS[:r % 3]:
                    run = run_round(variant, proxies[variant], args)
                    runs[variant].append(run)
                    extra = (f", follower counted {run['counted']:,}/{run['answered']:,} answered, "
                             f"{run['follower_cpu']:.2f} s CPU" if variant == "reader" else "")
                    print(f"round {r + 1}/{args.rounds} {variant}: {run['rps']:,.0f} req/s{extra}", flush=True)
        finally:
            for proxy in {id(p): p for p in proxies.values()}.values():
                proxy.stop()
            stop_process(backend)

    def med(variant: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[variant])

    rps = {v: med(v, "rps") for v in VARIANTS}
    print(f"summary (wrk -t{args.threads} -c{args.connections} -d{args.seconds}s keep-alive through the proxy, "
          f"{args.rounds} rounds, median; the proxy's rate limits off; 2 variants on one proxy, 'no ring' a second):")
    print("  throughput: " + "   ".join(f"{v} {rps[v]:,.0f} req/s" for v in VARIANTS)
          + "   rounds: " + "  ".join(f"{v} {[round(run['rps']) for run in runs[v]]}" for v in VARIANTS))
    print(f"    reader/ring = {rps['reader'] / rps['ring']:.3f}x   ring/no ring = {rps['ring'] / rps['no ring']:.3f}x"
          f"   reader/no ring = {rps['reader'] / rps['no ring']:.3f}x")
    haproxy = {v: statistics.median(per_10k(run["haproxy_cpu"], run["answered"]) for run in runs[v]) for v in VARIANTS}
    print("  HAProxy worker CPU per 10,000 requests: " + "   ".join(f"{v} {haproxy[v]:.3f} s" for v in VARIANTS)
          + f"   ring/no ring = {haproxy['ring'] / haproxy['no ring']:.2f}x"
          f"   reader/ring = {haproxy['reader'] / haproxy['ring']:.2f}x")
    follower = [per_10k(run["follower_cpu"], run["counted"]) for run in runs["reader"]]
    follower_cpu = statistics.median(follower)
    print(f"  follower CPU per 10,000 lines counted: {follower_cpu:.3f} s   rounds: {[round(f, 3) for f in follower]}"
          f"   (one core would follow ~{10_000 / follower_cpu:,.0f} lines/s;"
          f" at the reader's rate it used {med('reader', 'follower_cpu') / args.seconds:.0%} of a core)")
    counted = [run["counted"] / run["answered"] for run in runs["reader"]]
    sent = [run["counted"] / run["sent"] for run in runs["reader"]]
    print(f"  lines counted / requests HAProxy answered: {statistics.median(counted):.4f}   rounds: "
          f"{[round(c, 4) for c in counted]}   lost: {[run['answered'] - run['counted'] for run in runs['reader']]}")
    print(f"  lines counted / requests wrk completed:    {statistics.median(sent):.4f}   rounds: "
          f"{[round(s, 4) for s in sent]}   (HAProxy also answers requests in flight when wrk stops)")
    print(f"  lines HAProxy said it dropped (its '<n> events dropped' lines): {[run['dropped'] for run in runs['reader']]}"
          f"   lines unread: {[run['unread'] for run in runs['reader']]}   "
          f"follower errors: {sum(run['errors'] for run in runs['reader'])}")


if __name__ == "__main__":
    main()
