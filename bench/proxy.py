"""Data-plane bench: the mesh proxy (HAProxy on the rendered config) against going direct, and its
mTLS listener against its plain one, side by side in ONE run. Prints:
  * throughput: wrk through the proxy / wrk direct (alternating rounds, median of each);
  * added latency: p50/p99 at a fixed request rate (a Python client, requests to the targets
    interleaved so all see the same machine load), proxy minus direct;
  * what mTLS costs: the same two measures through a client-side HAProxy (a sidecar: wrk has no
    client certificates) that forwards, keeping its connections alive as a mesh caller does, to the
    proxy's plain listener or to its mTLS listener with a certificate of the mesh CA; mTLS minus plain.

The backend is a second HAProxy answering 200 from memory, so the backend is not the bottleneck.
The proxy's rate limits are off (a single client flooding it would be limited, 429).
Run: .venv/bin/python bench/proxy.py [--seconds 5] [--rate 200] [--connections 32] [--threads 2]
Needs: haproxy, wrk (Debian packages). Only 127.0.0.1, free ports.
"""

from __future__ import annotations

import argparse
import datetime as dt
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

from meshspec.common.connect_certs import service_uri  # noqa: E402
from meshspec.render.haproxy import ProxyOptions, proxy_paths  # noqa: E402
from meshspec.render.mesh_ca import certificate_pem  # noqa: E402
from tests.proxy.harness import CA_SECRET, HAProxy, stop_process, write_proxy_files  # noqa: E402
from tests.proxy.meshes import make_mesh, service  # noqa: E402
from tests.support import free_port, listening, wait_until  # noqa: E402

# One thread each: the bench's processes share the machine's two cores with wrk and the proxy.
HAPROXY_HEAD = """global
    nbthread 1
defaults
    mode http
    timeout client 30s
    timeout connect 5s
    timeout server 30s
"""
BACKEND_CFG = HAPROXY_HEAD + """frontend echo
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "hello from the backend"
"""
# A mesh caller's sidecar: plain HTTP in, kept-alive connections out to the proxy's two listeners.
SIDECAR_CFG = HAPROXY_HEAD + """    http-reuse always
frontend plain
    bind 127.0.0.1:{plain_port}
    default_backend plain
frontend mtls
    bind 127.0.0.1:{mtls_port}
    default_backend mtls
backend plain
    server proxy 127.0.0.1:{proxy_port}
backend mtls
    server proxy 127.0.0.1:{proxy_mtls_port} ssl crt {client} ca-file {ca} verify required
"""
CALLER = "bench-client"


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
        plan = make_mesh([service("echo", backend_port, 1)], (free_port(), free_port(), free_port()), root / "state",
                         mtls=free_port(), defaults={"routing": {"rate_limit": 0}}, proxy={"rate_limits": {"client": 0}})
        write_proxy_files(plan)
        # what the controller would keep there from the registry: the bench's caller may call echo
        Path(proxy_paths(plan)["intentions"]).write_text(f"{CALLER}/echo allow\n")
        client = root / "client.pem"
        client.write_text(certificate_pem(CA_SECRET, plan.spec.mesh.name, CALLER,
                                          service_uri(plan.spec.mesh.name, "dc1", CALLER), dt.datetime.now(dt.timezone.utc)))
        proxy = HAProxy(plan, ProxyOptions(log_target="127.0.0.1:9"))
        ports = {"plain_port": free_port(), "mtls_port": free_port(), "proxy_port": proxy.proxy.port,
                 "proxy_mtls_port": proxy.proxy.ports["mtls"]}
        (root / "sidecar.cfg").write_text(SIDECAR_CFG.format(**ports, client=client, ca=plan.layout.connect_ca_file))
        sidecar = None
        try:
            wait_until(lambda: listening(backend_port), 10, what="backend")
            proxy.start()
            sidecar = subprocess.Popen(["haproxy", "-db", "-f", str(root / "sidecar.cfg")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_until(lambda: listening(ports["mtls_port"]), 10, what="sidecar")
            targets = {"direct": f"http://127.0.0.1:{backend_port}/hello", "proxy": f"{proxy.url}/svc/echo/hello",
                       "plain": f"http://127.0.0.1:{ports['plain_port']}/svc/echo/hello",
                       "mtls": f"http://127.0.0.1:{ports['mtls_port']}/svc/echo/hello"}
            for url in targets.values():
                assert httpx.get(url, trust_env=False).status_code == 200, url

            rates = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    rates[name].append(wrk(url, args.seconds, args.connections, args.threads)[0])
            lat = fixed_rate(targets, args.rate, args.seconds * 4)
        finally:
            stop_process(sidecar)
            proxy.stop()
            stop_process(backend)

    print(f"throughput (wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, {args.rounds} rounds, median; "
          "the proxy's rate limits off):")
    for base, other in (("direct", "proxy"), ("plain", "mtls")):
        b, o = statistics.median(rates[base]), statistics.median(rates[other])
        print(f"  {base} {b:,.0f} req/s   {other} {o:,.0f} req/s   ratio {other}/{base} = {o / b:.2f}x"
              f"   rounds: {base} {[round(r) for r in rates[base]]}  {other} {[round(r) for r in rates[other]]}")
    print("  (plain and mtls: through the client-side sidecar, to the proxy's plain and mTLS listeners)")
    print(f"latency at a fixed {args.rate:.0f} req/s (interleaved, {len(lat['proxy'])} requests each):")
    for base, other in (("direct", "proxy"), ("plain", "mtls")):
        for q in (50, 99):
            bq, oq = pct(lat[base], q), pct(lat[other], q)
            print(f"  p{q}: {base} {bq:.3f} ms   {other} {oq:.3f} ms   added {oq - bq:+.3f} ms")


if __name__ == "__main__":
    main()
