"""Benchmark the embedded agent: sequential registrations/s, blocking-query wake-up latency, KV
transactions/s, and a session lock's hand-over between two clients.

Usage: .venv/bin/python bench/agent.py [--registrations N] [--watchers N] [--rounds N] [--handovers N] [--txns N]
Starts `meshspec agent` as a subprocess on a free 127.0.0.1 port with a temporary data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import consul
import requests

MESHSPEC = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "meshspec"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_agent(data_dir: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(MESHSPEC), "agent", "--data-dir", data_dir, "--port", str(port), "--node-name", "bench"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/v1/status/leader", timeout=0.5).ok:
                return proc
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("agent did not become ready")


def bench_registrations(port: int, count: int) -> float:
    c = consul.Consul(host="127.0.0.1", port=port)
    started = time.perf_counter()
    for n in range(count):
        c.agent.service.register("reg", service_id=f"reg-{n}", address="127.0.0.1", port=20000 + n,
                                 tags=["bench"], meta={"n": str(n)}, check=consul.Check.ttl("60s"))
    return count / (time.perf_counter() - started)


async def wake_round(base: str, watchers: int, session: aiohttp.ClientSession, round_no: int) -> list[float]:
    """Park `watchers` blocking GETs on one service, change it, and time each return from the change."""
    name = f"watched-{round_no}"
    async with session.get(f"{base}/v1/health/service/{name}") as response:
        index = response.headers["X-Consul-Index"]
    returned: list[float] = []

    async def watch() -> None:
        async with session.get(f"{base}/v1/health/service/{name}", params={"index": index, "wait": "30s"}) as r:
            await r.read()
        returned.append(time.perf_counter())

    tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
    await asyncio.sleep(2.0 + watchers / 1000)  # let every watcher connect and park
    parked = sum(not t.done() for t in tasks)
    changed_at = time.perf_counter()
    async with session.put(f"{base}/v1/agent/service/register", json={"Name": name, "Port": 1}) as r:
        assert r.status == 200, await r.text()
    await asyncio.gather(*tasks)
    if parked != watchers:
        print(f"  warning: only {parked}/{watchers} watchers were still parked at the change")
    return [t - changed_at for t in returned]


async def bench_wakeups(port: int, watchers: int, rounds: int) -> list[float]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        latencies: list[float] = []
        for n in range(rounds):
            latencies += await wake_round(f"http://127.0.0.1:{port}", watchers, session, n)
        return latencies


def bench_txns(port: int, count: int, ops: int = 4) -> float:
    """Sequential /v1/txn calls of `ops` KV sets each, per second (each one SQLite transaction)."""
    import base64

    client = consul.Consul(host="127.0.0.1", port=port)
    value = base64.b64encode(b"x" * 64).decode()
    started = time.perf_counter()
    for n in range(count):
        answer = client.txn.put([{"KV": {"Verb": "set", "Key": f"bench/txn/{n}/{i}", "Value": value}}
                                 for i in range(ops)])
        assert answer["Errors"] is None
    return count / (time.perf_counter() - started)


def bench_handovers(port: int, count: int) -> list[float]:
    """Seconds from the holder's release PUT to the waiter holding the lock: the waiter blocks on the
    key (as `consul lock` does), wakes on the release and acquires with its own session (lock delay 0:
    a release sets none anyway). The two clients swap roles each time."""
    import threading

    clients = [consul.Consul(host="127.0.0.1", port=port), consul.Consul(host="127.0.0.1", port=port)]
    sessions = [c.session.create(name=f"bench-{i}", lock_delay=0) for i, c in enumerate(clients)]
    key = "bench/leader"
    assert clients[0].kv.put(key, "0", acquire=sessions[0])
    times: list[float] = []
    for n in range(count):
        holder, waiter = n % 2, (n + 1) % 2
        index, _ = clients[waiter].kv.get(key)
        took: list[float] = []

        def wait_and_take() -> None:
            seen_index = index
            while True:
                seen_index, entry = clients[waiter].kv.get(key, index=seen_index, wait="10s")
                if entry is not None and "Session" not in entry and clients[waiter].kv.put(
                        key, str(waiter), acquire=sessions[waiter]):
                    took.append(time.perf_counter())
                    return

        thread = threading.Thread(target=wait_and_take)
        thread.start()
        time.sleep(0.02)  # the waiter is parked on the key
        released = time.perf_counter()
        assert clients[holder].kv.put(key, str(holder), release=sessions[holder])
        thread.join(15)
        times.append(took[0] - released)
    return times


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=300)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--handovers", type=int, default=50)
    parser.add_argument("--txns", type=int, default=300)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    with tempfile.TemporaryDirectory(prefix="meshspec-bench-") as data_dir:
        port = free_port()
        proc = start_agent(data_dir, port)
        try:
            rate = bench_registrations(port, args.registrations)
            latencies = asyncio.run(bench_wakeups(port, args.watchers, args.rounds))
            handovers = [x * 1000 for x in bench_handovers(port, args.handovers)]
            txn_rate = bench_txns(port, args.txns)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)

    print(f"machine: {os.cpu_count()} cores; agent and client on 127.0.0.1, each one Python process")
    print(f"registrations/s (py-consul, sequential, service + TTL check, {args.registrations} regs): {rate:.0f}")
    print("  note: every registration is one SQLite transaction with synchronous=FULL (an fsync) before the reply")
    ms = [x * 1000 for x in latencies]
    print(f"blocking-query wake-up with {args.watchers} concurrent watchers x {args.rounds} rounds "
          f"({len(ms)} samples): p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
          f"max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms")
    print("  note: measured from just before the registering PUT to each watcher's full response body,"
          " including the write's fsync and the single-threaded client reading 1,000 responses")
    print(f"KV transactions/s (py-consul, sequential, 4 sets each, {args.txns} txns): {txn_rate:.0f}")
    print(f"session lock hand-over between two py-consul clients ({len(handovers)} hand-overs): "
          f"p50 {percentile(handovers, 50):.1f} ms, p99 {percentile(handovers, 99):.1f} ms, max {max(handovers):.1f} ms")
    print("  note: from the holder's release PUT to the waiter's acquire answering true; the waiter was"
          " parked in a blocking query on the key")


if __name__ == "__main__":
    main()
