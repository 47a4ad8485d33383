"""Data-plane bench: the mesh proxy (HAProxy on the rendered config) against going direct, side by side
in ONE run. Prints:
  * throughput: wrk through the proxy / wrk direct (alternating rounds, median of each);
  * added latency: p50/p99 at a fixed request rate (a Python client, requests to the two targets
    interleaved so both see the same machine load), proxy minus direct.

The backend is a second HAProxy answering 200 from memory, so the backend is not the bottleneck.
Run: .venv/bin/python bench/proxy.py [--seconds 5] [--rate 200] [--connections 32] [--threads 2]
Needs: haproxy, wrk (Debian packages). Only 127.0.0.1, free ports.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshspec.render.haproxy import ProxyOptions  # noqa: E402
from tests.proxy.harness import HAProxy, stop_process  # noqa: E402
from tests.proxy.meshes import make_mesh, service  # noqa: E402
from tests.support import free_port, listening, wait_until  # noqa: E402

BACKEND_CFG = """global
    nbthread 1
defaults
    mode http
    timeout client 30s
    timeout connect 5s
    timeout server 30s
frontend echo
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "hello from the backend"
"""


def wrk(url: str, seconds: int, connections: int, threads: int) -> tuple[float, str]:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, out


def fixed_rate(urls: dict[str, str], rate: float, seconds: float) -> dict[str, list[float]]:
    """One request every 1/rate s, alternating targets; latencies in ms per target."""
    clients = {name: httpx.Client(trust_env=False, timeout=5) for name in urls}
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    names = list(urls)
    start, i = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        due = start + i / rate
        if (pause := due - time.perf_counter()) > 0:
            time.sleep(pause)
        name = names[i % len(names)]
        t0 = time.perf_counter()
        response = clients[name].get(urls[name])
        latencies[name].append(1000 * (time.perf_counter() - t0))
        assert response.status_code == 200, (name, response.status_code)
        i += 1
    return latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 100 else max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="meshspec-bench-") as tmp:
        root = Path(tmp)
        backend_port = free_port()
        (root / "backend.cfg").write_text(BACKEND_CFG.format(port=backend_port))
        backend = subprocess.Popen(["haproxy", "-db", "-f", str(root / "backend.cfg")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        plan = make_mesh([service("echo", backend_port, 1)], (free_port(), free_port(), free_port()), root / "state")
        proxy = HAProxy(plan, ProxyOptions(client_rate=0, service_rate=0, log_target="127.0.0.1:9"))
        try:
            wait_until(lambda: listening(backend_port), 10, what="backend")
            proxy.start()
            direct, through = f"http://127.0.0.1:{backend_port}/hello", f"{proxy.url}/svc/echo/hello"
            assert httpx.get(through, trust_env=False).status_code == 200

            rates = {"direct": [], "proxy": []}
            for _ in range(args.rounds):
                for name, url in (("direct", direct), ("proxy", through)):
                    rates[name].append(wrk(url, args.seconds, args.connections, args.threads)[0])
            lat = fixed_rate({"direct": direct, "proxy": through}, args.rate, args.seconds * 2)
        finally:
            proxy.stop()
            stop_process(backend)

    d, p = statistics.median(rates["direct"]), statistics.median(rates["proxy"])
    print(f"throughput (wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, {args.rounds} rounds, median):")
    print(f"  direct {d:,.0f} req/s   proxy {p:,.0f} req/s   ratio proxy/direct = {p / d:.2f}x")
    print(f"  rounds: direct {[round(r) for r in rates['direct']]}  proxy {[round(r) for r in rates['proxy']]}")
    print(f"latency at a fixed {args.rate:.0f} req/s (interleaved, {len(lat['proxy'])} requests each):")
    for q in (50, 99):
        dq, pq = pct(lat["direct"], q), pct(lat["proxy"], q)
        print(f"  p{q}: direct {dq:.3f} ms   proxy {pq:.3f} ms   added {pq - dq:+.3f} ms")


if __name__ == "__main__":
    main()
