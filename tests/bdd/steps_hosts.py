"""Steps about a mesh on several hosts (the test cluster of `meshspec cluster`): a host cut off under
Locust load, watched from every other host's proxy through its stats page."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from pytest_bdd import given, parsers, then, when

from meshspec.cluster import PREFIX
from meshspec.plan.layout import STATS_CREDENTIALS
from meshspec.render.haproxy import backend_name
from meshspec.runtime.proxy.outliers import parse_stat
from meshspec.spec.resolve import effective_routing, path_prefix
from meshspec.verify.remote import HostReader
from tests.bdd.mesh_target import wait_for
from tests.cluster_support import arrivals

LOCUST = Path(sys.executable).parent / "locust"
ROUTES = Path(__file__).resolve().parents[2] / "loadtests" / "route.py"
WATCH_EVERY_S = 0.1


class RotationWatch(threading.Thread):
    """Reads one proxy's stats page (`show stat`'s CSV, over HTTP with its credentials) every
    WATCH_EVERY_S and keeps, for each watched server, the times it was seen out of and back in
    rotation (in: status UP, as the controller's outlier ejection reads it)."""

    def __init__(self, url: str, auth: tuple[str, str], backend: str, servers: set[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.auth, self.backend, self.servers = url, auth, backend, servers
        self.changes: list[tuple[float, str, bool]] = []
        self.errors = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        seen: dict[str, bool] = {}
        with httpx.Client(trust_env=False, timeout=1, auth=self.auth) as client:
            while not self.stopped.is_set():
                try:
                    rows = parse_stat(client.get(self.url).text)
                except httpx.HTTPError:
                    self.errors += 1
                    rows = []
                for row in rows:
                    if row.backend == self.backend and row.name in self.servers and seen.get(row.name) != row.in_rotation:
                        seen[row.name] = row.in_rotation
                        self.changes.append((time.monotonic(), row.name, row.in_rotation))
                self.stopped.wait(WATCH_EVERY_S)

    def first(self, server: str, inside: bool, after: float) -> float | None:
        return next((t for t, name, state in self.changes if name == server and state is inside and t >= after), None)


def _stop(watches: list[RotationWatch]) -> None:
    for watch in watches:
        watch.stopped.set()
    for watch in watches:
        watch.join(5)


def _link(host: str, state: str) -> None:
    subprocess.run(["ip", "link", "set", f"{PREFIX}-{host}", state], check=True, timeout=30)


@given(parsers.parse('"{service}" has an instance on "{host}" and others on the other hosts'))
def _(world, service, host):
    instances = world.target.instances_of(service)
    hosts = {i.host.name for i in instances}
    assert host in hosts and len(hosts) > 1, f"{service} runs on {sorted(hosts)}: the scenario needs {host} and another"
    world.counters["victims"] = {i.id for i in instances if i.host.name == host}


@when(parsers.parse('Locust calls "{service}" through the proxy of every other host for {seconds:d} s, '
                    'with "{host}" cut off from {cut:d} s to {back:d} s'))
def _(world, service, seconds, host, cut, back, tmp_path, request):
    plan = world.target.plan
    svc = plan.service(service)
    # the first page its probe reads (a liveness read, which stores nothing), and what it says there
    page = svc.health.http.first_page
    path = path_prefix(svc, effective_routing(plan.spec, svc)).rstrip("/") + plan.render_once(service, page.path)
    expect = plan.render_once(service, page.contains or "")
    proxies = [p for p in plan.instances_of(plan.spec.proxy.service) if p.host.name != host]
    routes = [{"path": f"http://{p.address}:{p.port}{path}", "expect": expect} for p in proxies]
    key_file = tmp_path / "operator-key"  # the operator's key, read on the proxy's host, for route.py
    key_file.touch(mode=0o600)
    key_file.write_text(world.target.edge_headers.get("X-API-Key", ""))
    watches = []
    for proxy in proxies:
        user, _, password = HostReader(proxy.host).read_text(plan.proxy_file(STATS_CREDENTIALS, proxy)).strip().partition(":")
        stats = f"http://{proxy.address}:{proxy.ports[plan.spec.proxy.stats_port_name]}/stats;csv"
        watches.append(RotationWatch(stats, (user, password), backend_name(service), world.counters["victims"]))
    for watch in watches:
        watch.start()
    # Stopped at the scenario's end whatever fails first: a watch left running polls that proxy's
    # stats port through the next scenario (CI: 1,762 packets in the one counting them).
    request.addfinalizer(lambda: _stop(watches))
    env = {**os.environ, "MESH_ROUTES": json.dumps(routes), "MESH_RATE_PER_USER": "5",
           "MESH_API_KEY_FILE": str(key_file)}
    locust = subprocess.Popen([str(LOCUST), "-f", str(ROUTES), "--headless", "-u", "8", "-r", "8", "-t", f"{seconds}s",
                               "--stop-timeout", "5", "--only-summary", "--host", routes[0]["path"].split("/svc/")[0],
                               "--csv", str(tmp_path / "locust")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    request.addfinalizer(locust.kill)  # a no-op once it has ended
    started = time.monotonic()
    try:
        time.sleep(cut)
        world.counters["cut_at"] = time.monotonic()
        _link(host, "down")
        time.sleep(max(0.0, back - (time.monotonic() - started)))
    finally:
        world.counters["back_at"] = time.monotonic()
        _link(host, "up")
    output, _ = locust.communicate(timeout=seconds + 60)
    totals = next(row for row in csv.DictReader(open(tmp_path / "locust_stats.csv")) if row["Name"] == "Aggregated")
    world.counters |= {"watches": dict(zip((p.host.name for p in proxies), watches)),
                       "requests": int(totals["Request Count"]), "failures": int(totals["Failure Count"]),
                       "locust": output[-2000:]}
    print(f"Locust through {', '.join(p.id for p in proxies)}: {totals['Request Count']} requests, "
          f"{totals['Failure Count']} failed; {host} cut off {cut} s in, back {back} s in")


@then(parsers.parse("at most {percent:g}% of Locust's requests failed"))
def _(world, percent):
    requests, failures = world.counters["requests"], world.counters["failures"]
    assert requests > 0, f"Locust sent nothing: {world.counters['locust']}"
    assert failures <= requests * percent / 100, (f"{failures} of {requests} failed (more than {percent}%): "
                                                  f"{world.counters['locust']}")


@then(parsers.parse('every other host\'s proxy had the instances on "{host}" out of rotation within {seconds:g} s of the cut'))
def _(world, host, seconds):
    cut, late = world.counters["cut_at"], []
    for proxy_host, watch in world.counters["watches"].items():
        for server in sorted(world.counters["victims"]):
            out = watch.first(server, False, cut)
            print(f"{proxy_host}'s proxy: {server} out of rotation "
                  + (f"{out - cut:.2f} s after the cut" if out else "never") + f" ({watch.errors} unread pages)")
            if out is None or out - cut > seconds:
                late.append(f"{proxy_host}: {server} " + (f"after {out - cut:.2f} s" if out else "never"))
    assert not late, f"not out of rotation within {seconds} s of the cut: {late}"


@then(parsers.parse("every other host's proxy had them back in rotation within {seconds:g} s of the link's return"))
def _(world, seconds):
    back, late, watches = world.counters["back_at"], [], world.counters["watches"]
    victims = sorted(world.counters["victims"])
    while time.monotonic() < back + seconds and not all(w.first(s, True, back) for w in watches.values() for s in victims):
        time.sleep(0.5)
    _stop(list(watches.values()))
    for proxy_host, watch in watches.items():
        for server in victims:
            again = watch.first(server, True, back)
            print(f"{proxy_host}'s proxy: {server} back in rotation "
                  + (f"{again - back:.2f} s after the link's return" if again else "not yet"))
            if again is None or again - back > seconds:
                late.append(f"{proxy_host}: {server}")
    assert not late, f"not back in rotation within {seconds} s of the link's return: {late}"


def _up(world) -> dict[str, str]:
    """{instance_id: the value of `up`} of Prometheus' targets, asked of Prometheus itself."""
    prometheus = world.target.instances_of("prometheus")[0]
    answer = httpx.get(f"http://{prometheus.address}:{prometheus.port}/api/v1/query", params={"query": "up"},
                       timeout=10, trust_env=False)
    assert answer.status_code == 200, f"Prometheus: HTTP {answer.status_code}: {answer.text[:300]}"
    return {r["metric"].get("instance_id"): r["value"][1] for r in answer.json()["data"]["result"]}


@then(parsers.parse("within {seconds:d} s Prometheus has every instance of the other hosts that exports metrics up"))
def _(world, seconds):
    plan = world.target.plan
    prometheus = plan.instances_of("prometheus")[0]
    wanted = {i.id for i in plan.instances if i.host != prometheus.host and plan.metrics_port(i)}
    assert wanted, "no instance of another host exports metrics"
    up = wait_for(lambda: (found := _up(world)) and all(found.get(i) == "1" for i in wanted) and found, seconds, 5)
    found = up or _up(world)
    assert up, f"not up in Prometheus within {seconds} s: {sorted((i, found.get(i)) for i in wanted if found.get(i) != '1')}"
    print(f"Prometheus on {prometheus.host.name}: {len(wanted)} targets of the other hosts up")


@then(parsers.parse('for {seconds:d} s no packet from another host reaches a metrics port of "{host}"'))
def _(world, seconds, host):
    """Two scrape intervals at least: every scrape of the host went through its proxy's inbound
    listener (whose counter grows), none to a metrics port itself."""
    plan = world.target.plan
    ports = {i.id: plan.metrics_port(i) for i in plan.instances if i.host.name == host and plan.metrics_port(i)}
    proxy = next(p for p in plan.instances_of(plan.spec.proxy.service) if p.host.name == host)
    with arrivals(host, {**ports, "inbound": plan.inbound_port(proxy)}) as read:
        time.sleep(seconds)
        counted = read()
    print(f"packets from other hosts in {seconds} s at {host}: {counted}")
    assert counted["inbound"] > 0, f"nothing reached {host}'s inbound listener: {counted}"
    assert not [name for name in ports if counted[name]], f"plaintext from another host at a metrics port: {counted}"
