"""Many hosts (issue 19), on the test cluster (`meshspec cluster`), in one run:

  * no-op deploy: the shipped mesh on the cluster's three hosts against the same mesh on this one
    host (its own state dir and port offset), each deployed once, then the no-op re-run timed
    `--rounds` times each, alternating; the medians and their ratio;
  * one host cut off (the host side of its veth down, as a pulled cable) under load through the
    proxy: requests to backend-api, which has a replica on each host, at a steady `--rate` through
    the proxy's edge (under its rate limit); the client's error ratio from the cut until the host
    is back in rotation, and the time from the cut until the proxy has that host's server out of
    rotation (HAProxy's runtime API, read every 50 ms);
  * the link back: the time until the server is in rotation again;
  * what one SSH command costs on a cluster host (`true` over one kept connection, as pyinfra keeps
    one per host): the no-op sends two to each host, and the host's login shell runs each (root's
    rc files included).

Needs root and openssh-server, and no cluster up; takes about ten minutes (installs cached).
The runtime API is reached through the cluster's directory, where the registry's host's
/srv/meshspec is (a shortcut of the test cluster: its hosts share this machine's filesystem).
    .venv/bin/python bench/cluster.py [--rounds 3] [--rate 20] [--cut 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from meshspec.cluster import DEFAULT_DIR, STATE_DIR
from meshspec.converge.mesh import configured_mesh
from meshspec.render.haproxy import backend_name, proxy_instance
from meshspec.runtime.proxy.runtime_api import RuntimeApi, RuntimeApiError
from meshspec.spec.resolve import effective_routing, path_prefix
from meshspec.verify.run import edge_headers

REPO = Path(__file__).resolve().parents[1]
MESHSPEC = str(Path(sys.executable).parent / "meshspec")
CLUSTER = {"MESH_HOSTS_FILE": str(DEFAULT_DIR / "hosts")}
ONE_HOST = {"MESH_STATE_DIR": "/tmp/meshspec-bench-one", "MESH_PORT_OFFSET": "7000"}
CUT = "h3"  # runs backend-api's third replica and nothing else
SERVICE = "backend-api"


def env(extra: dict[str, str]) -> dict[str, str]:
    mine = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "CONSUL_HTTP"))}
    return mine | extra


def meshspec(*args: str, extra: dict[str, str]) -> float:
    """Seconds the command took; exits the bench when it fails."""
    started = time.monotonic()
    done = subprocess.run([MESHSPEC, *args], cwd=REPO, env=env(extra), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"meshspec {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return time.monotonic() - started


def noop_rounds(rounds: int) -> tuple[list[float], list[float]]:
    cluster, one = [], []
    for n in range(rounds):
        cluster.append(meshspec("deploy", extra=CLUSTER))
        one.append(meshspec("deploy", extra=ONE_HOST))
        print(f"  no-op round {n + 1}: cluster {cluster[-1]:.1f} s, one host {one[-1]:.1f} s", flush=True)
    return cluster, one


class Load(threading.Thread):
    """Requests at a steady rate, each (time sent, answered 200) kept."""

    def __init__(self, url: str, headers: dict[str, str], rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.headers, self.every = url, headers, 1 / rate
        self.results: list[tuple[float, bool]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(trust_env=False, timeout=10, headers=self.headers) as client:
            due = time.monotonic()
            while not self.stopped.is_set():
                sent = time.monotonic()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.results.append((sent, ok))
                due += self.every
                time.sleep(max(0.0, due - time.monotonic()))


def in_rotation(api: RuntimeApi, backend: str, address: str) -> bool | None:
    try:
        found = [s for s in api.servers_state(backend) if s.addr == address]
    except RuntimeApiError:
        return None  # a reload: the next read tells
    return bool(found) and found[0].in_rotation


def wait_rotation(api: RuntimeApi, backend: str, address: str, wanted: bool, since: float, timeout: float) -> float:
    while time.monotonic() - since < timeout:
        if in_rotation(api, backend, address) is wanted:
            return time.monotonic() - since
        time.sleep(0.05)
    return float("nan")


def cut_under_load(rate: float, cut_seconds: float) -> None:
    os.environ.update(CLUSTER)
    plan = configured_mesh().plan
    svc = plan.service(SERVICE)
    front = proxy_instance(plan)
    path = path_prefix(svc, effective_routing(plan.spec, svc)).rstrip("/") + svc.health.http.path
    victim = next(i for i in plan.instances_of(SERVICE) if i.host.name == CUT)
    socket = plan.proxy_runtime.replace(STATE_DIR, str(DEFAULT_DIR / front.host.name / "srv"), 1)
    api, backend, address = RuntimeApi(socket), backend_name(SERVICE), victim.address
    assert in_rotation(api, backend, address), f"{victim.id} is not in rotation before the cut"
    load = Load(f"http://{front.address}:{front.port}{path}", edge_headers(plan), rate)
    load.start()
    time.sleep(5)
    cut = time.monotonic()
    subprocess.run(["ip", "link", "set", f"msc-{CUT}", "down"], check=True)
    out = wait_rotation(api, backend, address, False, cut, 60)
    time.sleep(max(0.0, cut_seconds - (time.monotonic() - cut)))
    back = time.monotonic()
    subprocess.run(["ip", "link", "set", f"msc-{CUT}", "up"], check=True)
    returned = wait_rotation(api, backend, address, True, back, 120)
    time.sleep(5)
    load.stopped.set()
    load.join()
    during = [ok for sent, ok in load.results if cut <= sent <= back + returned]
    before = [ok for sent, ok in load.results if sent < cut]
    failed = during.count(False)
    print(f"cut {CUT} ({victim.id}) for {cut_seconds:.0f} s under {rate:.0f} req/s to {SERVICE} through the proxy:")
    print(f"  out of rotation {out:.2f} s after the cut; back in rotation {returned:.2f} s after the link came back")
    print(f"  client errors from the cut until it was back: {failed} of {len(during)} "
          f"({100 * failed / max(1, len(during)):.2f}%); before the cut: {before.count(False)} of {len(before)}")


def ssh_command_ms(samples: int = 7) -> dict[str, float]:
    """{host: median milliseconds of `true` over one kept connection (OpenSSH's multiplexing)}."""
    os.environ.update(CLUSTER)
    found = {}
    for h in (h for h in configured_mesh().plan.hosts if not h.is_local):
        ssh = h.ssh_command("-o", "ControlMaster=auto", "-o", f"ControlPath={DEFAULT_DIR}/bench-%h",
                            "-o", "ControlPersist=10")
        subprocess.run([*ssh, "true"], check=True)  # the connection, kept
        times = []
        for _ in range(samples):
            started = time.monotonic()
            subprocess.run([*ssh, "true"], check=True)
            times.append(1000 * (time.monotonic() - started))
        found[h.name] = statistics.median(times)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second during the cut")
    parser.add_argument("--cut", type=float, default=20.0, help="seconds the host stays cut off")
    args = parser.parse_args()
    meshspec("cluster", "up", extra={})
    try:
        print(f"deploy to the cluster: {meshspec('deploy', extra=CLUSTER):.0f} s; "
              f"to one host: {meshspec('deploy', extra=ONE_HOST):.0f} s", flush=True)
        cluster, one = noop_rounds(args.rounds)
        c, o = statistics.median(cluster), statistics.median(one)
        print(f"no-op deploy, median of {args.rounds}: cluster of 3 hosts {c:.1f} s, one host {o:.1f} s: {c / o:.2f}x")
        costs = ssh_command_ms()
        print("one SSH command (`true`, connection kept), median: "
              + ", ".join(f"{name} {ms:.0f} ms" for name, ms in costs.items()), flush=True)
        cut_under_load(args.rate, args.cut)
    finally:
        subprocess.run(["ip", "link", "set", f"msc-{CUT}", "up"], capture_output=True)
        for extra in (ONE_HOST, CLUSTER):
            subprocess.run([MESHSPEC, "deploy", "deploys/teardown.py"], cwd=REPO, env=env(extra), capture_output=True)
        subprocess.run([MESHSPEC, "cluster", "down"], capture_output=True)


if __name__ == "__main__":
    main()
