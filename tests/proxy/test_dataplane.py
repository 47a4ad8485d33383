"""The data plane for real: HAProxy 2.6 on the rendered config, the embedded agent, the controller,
real backend HTTP servers and a real MCP server (official SDK). All on 127.0.0.1, free ports."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import pytest

from meshspec.render.haproxy import backend_name
from meshspec.runtime.proxy.controller import Controller
from meshspec.spec.resolve import effective_routing
from tests.agent.conftest import AgentProcess
from tests.bdd.mesh_target import stats_rows
from tests.bdd.steps_proxy import assert_balanced
from tests.probes.test_mcp_probe import ServerProcess, mcp_python  # noqa: F401  (a fixture)
from tests.proxy.harness import Backend, ControllerThread, HAProxy
from tests.proxy.meshes import free_block, make_mesh, service
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("haproxy") is None, reason="apt-get install haproxy")]

TTL_PASSING = {"TTL": "10m", "Status": "passing"}
# Rate limits over a 1 s window: "limited" 5 a second, every other service none; each client 5,000.
LIMITS = {"defaults": {"routing": {"rate_limit": 0}}, "proxy": {"rate_limits": {"window": "1s", "client": 5_000}}}



class Mesh:
    def __init__(self, root: Path, agent: AgentProcess) -> None:
        self.root, self.agent = root, agent
        self.backends: dict[str, Backend] = {}
        self.http = httpx.Client(trust_env=False, timeout=10)
        self.consul = httpx.Client(base_url=f"http://{agent.address}", trust_env=False, timeout=10)

    def register(self, name: str, instance_id: str, port: int, check: dict | None = None) -> None:
        body = {"ID": instance_id, "Name": name, "Address": "127.0.0.1", "Port": port,
                "Check": {"CheckID": f"service:{instance_id}", "Name": "ttl", **(check or TTL_PASSING)}}
        self.consul.put("/v1/agent/service/register", json=body).raise_for_status()

    def deregister(self, instance_id: str) -> None:
        self.consul.put(f"/v1/agent/service/deregister/{instance_id}").raise_for_status()

    def ttl(self, instance_id: str, status: str) -> None:
        verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
        self.consul.put(f"/v1/agent/check/{verb}/service:{instance_id}").raise_for_status()

    def start_backend(self, name: str, instance_id: str, port: int, register: bool = True) -> Backend:
        backend = Backend(instance_id, port, self.root).start().wait()
        self.backends[instance_id] = backend
        if register:
            self.register(name, instance_id, port)
        return backend

    def get(self, path: str, **kw) -> httpx.Response:
        return self.http.get(self.proxy.url + path, **kw)

    def who(self, path: str, **kw) -> str:
        response = self.get(path, **kw)
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()["name"]

    def server(self, backend: str, name: str):
        return next((s for s in self.proxy.api.servers_state(backend) if s.name == name), None)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataplane")
    agent = AgentProcess(root / "agent").start()
    services = [
        service("web", free_block(2), 2),
        service("kill", free_block(3), 3),
        service("rr", free_block(3), 3),
        service("wt", free_block(2), 2, {"lb": {"policy": "weighted", "weights": [1, 3]}}),
        service("lc", free_block(2), 2, {"lb": {"policy": "least_conn"}}),
        service("hh", free_block(3), 3, {"lb": {"policy": "hash", "hash_on": {"header": "X-User"}}}),
        service("brk", free_block(2), 2, {"circuit_breaker": {"errors": 3, "cooldown": "2s"}}),
        service("hang", free_block(3), 3, {"timeouts": {"request": "500ms"},
                                           "circuit_breaker": {"errors": 3, "cooldown": "1s"}}),
        service("limited", free_block(1), 1, {"rate_limit": 5}),
        service("mcpx", free_block(3), 2, {"affinity": "mcp_session"}, {"mcp": {}}, kind="mcp"),
    ]
    replan = partial(make_mesh, proxy_ports=(free_port(), free_port(), free_port()), state_dir=root / "state",
                     consul=agent.address, **LIMITS)
    plan = replan(services)
    m = Mesh(root, agent)
    m.plan, m.services, m.replan = plan, services, replan
    m.proxy = HAProxy(plan)
    m.controller = Controller(agent.address, m.proxy.api, Path("/dev/null"), resync=0.2)  # replaced below
    m.thread = None
    try:
        for inst in plan.instances:
            if inst.service not in ("mesh-proxy", "mcpx"):
                m.start_backend(inst.service, inst.id, inst.port)
        m.proxy.start()
        m.controller = Controller(agent.address, m.proxy.api, m.proxy.config, drain_grace=30, wait="10s",
                                  resync=0.2)
        m.thread = ControllerThread(m.controller).start()
        wait_until(lambda: m.controller.synced.is_set() and len(m.controller.endpoints) == 10, 10, what="first sync")
        yield m
    finally:
        if m.thread:
            m.thread.stop()
        m.proxy.stop()
        for backend in m.backends.values():
            backend.stop()
        agent.stop()


def spread(mesh: Mesh, path: str, n: int, **kw) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _ in range(n):
        name = mesh.who(path, **kw)
        counts[name] = counts.get(name, 0) + 1
    return counts


# --- (a) membership follows Consul within a second ------------------------------------------------

def test_new_instance_gets_traffic_and_leaves_rotation_within_a_second(mesh):
    assert set(spread(mesh, "/svc/web/", 10)) == {"web-local-0", "web-local-1"}
    extra = mesh.start_backend("web", "web-extra-7", free_port(), register=False)

    started = time.monotonic()
    mesh.register("web", "web-extra-7", extra.port)
    wait_until(lambda: mesh.who("/svc/web/x") == "web-extra-7", 1.0, interval=0.005, what="traffic to the new instance")
    print(f"\nnew instance in rotation after {1000 * (time.monotonic() - started):.0f} ms")

    started = time.monotonic()
    mesh.deregister("web-extra-7")
    wait_until(lambda: mesh.server("svc_web", "spare-1").admin != "ready", 1.0, interval=0.005, what="drained")
    print(f"deregistered instance out of rotation after {1000 * (time.monotonic() - started):.0f} ms")
    assert "web-extra-7" not in spread(mesh, "/svc/web/", 12)

    started = time.monotonic()
    mesh.ttl("web-local-1", "critical")
    wait_until(lambda: mesh.server("svc_web", "web-local-1").admin == "maint", 1.0, interval=0.005, what="maint")
    print(f"critical instance out of rotation after {1000 * (time.monotonic() - started):.0f} ms")
    assert spread(mesh, "/svc/web/", 10) == {"web-local-0": 10}

    mesh.ttl("web-local-1", "passing")
    wait_until(lambda: "web-local-1" in spread(mesh, "/svc/web/", 4), 1.0, interval=0.005, what="back in rotation")


# --- (b) SIGKILL of a replica under load ----------------------------------------------------------

def test_sigkill_of_one_replica_under_load_loses_no_request(mesh):
    total, errors, seen = 2000, [], {}
    lock = threading.Lock()
    local = threading.local()

    def one(i: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(trust_env=False, timeout=10)
        time.sleep(0.016)  # ~2,000 requests from 8 threads over ~4 s
        try:
            response = local.client.get(f"{mesh.proxy.url}/svc/kill/req/{i}")
            ok = response.status_code == 200
            name = response.json()["name"] if ok else f"HTTP {response.status_code}"
        except httpx.HTTPError as err:
            ok, name = False, repr(err)
        with lock:
            seen[name] = seen.get(name, 0) + 1
            if not ok:
                errors.append(name)

    victim = mesh.backends["kill-local-1"]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(total)]
        time.sleep(1.2)
        victim.kill()
        killed_at = time.monotonic() - started
        for future in futures:
            future.result()
    elapsed = time.monotonic() - started
    print(f"\n{total} requests in {elapsed:.1f} s, replica killed at {killed_at:.1f} s: {seen}")
    assert errors == []
    assert seen.get("kill-local-1", 0) > 0 and seen.get("kill-local-0", 0) > 0 and seen.get("kill-local-2", 0) > 0


# --- (c) load-balancing policies -----------------------------------------------------------------

def test_round_robin_spreads_evenly(mesh):
    counts = spread(mesh, "/svc/rr/", 300)
    assert set(counts) == {"rr-local-0", "rr-local-1", "rr-local-2"}
    assert all(95 <= c <= 105 for c in counts.values()), counts


def test_weighted_follows_the_weights(mesh):
    counts = spread(mesh, "/svc/wt/", 400)
    assert 95 <= counts["wt-local-0"] <= 105 and 295 <= counts["wt-local-1"] <= 305, counts


def test_least_conn_avoids_the_busy_server(mesh):
    pool = ThreadPoolExecutor(1)
    slow = pool.submit(mesh.who, "/svc/lc/slow?sleep=1.5")
    wait_until(lambda: any(s.name.startswith("lc-") for s in mesh.proxy.api.servers_state("svc_lc")), 1)
    time.sleep(0.2)
    quick = spread(mesh, "/svc/lc/", 10)
    busy = slow.result()
    pool.shutdown()
    assert len(quick) == 1 and busy not in quick, (busy, quick)


def test_hash_on_header_is_sticky_per_key(mesh):
    for user in ("alice", "bob", "carol"):
        assert len(spread(mesh, "/svc/hh/", 10, headers={"X-User": user})) == 1
    owners = {mesh.who("/svc/hh/", headers={"X-User": f"user-{i}"}) for i in range(40)}
    assert len(owners) >= 2


def test_the_balance_step_reads_the_running_haproxy_and_fails_on_a_mismatch(mesh):
    """The BDD step "the proxy balances <service> with the <policy> policy" compares the spec with
    HAProxy's own stats, so a proxy balancing otherwise fails it: shown with real backends."""
    def routing(name):
        return effective_routing(mesh.plan.spec, mesh.plan.service(name))

    running = {name: stats_rows(mesh.proxy.api, backend_name(name))["BACKEND"]["algo"] for name in ("rr", "lc", "hh")}
    assert running == {"rr": "roundrobin", "lc": "leastconn", "hh": "hdr"}
    for name in running:
        assert_balanced(name, routing(name), running[name])
    with pytest.raises(AssertionError, match="HAProxy balances rr with 'leastconn'; the spec's round_robin is 'roundrobin'"):
        assert_balanced("rr", routing("rr"), running["lc"])


# --- (d) circuit breaker -------------------------------------------------------------------------

def test_breaker_opens_on_5xx_and_closes_after_cooldown(mesh):
    bad = mesh.backends["brk-local-1"]
    bad.control(500)
    statuses = [mesh.get("/svc/brk/").status_code for _ in range(30)]
    failures = statuses.count(500)
    opened = mesh.server("svc_brk", "brk-local-1")
    assert 1 <= failures <= 3, statuses  # error-limit 3: at most 3 errors reach clients
    assert not opened.is_up and opened.admin == "ready"  # HAProxy's breaker, not Consul, took it out
    assert spread(mesh, "/svc/brk/", 20) == {"brk-local-0": 20}

    time.sleep(2.5)  # past the cooldown while still failing: the re-probe fails, it stays open
    assert spread(mesh, "/svc/brk/", 6) == {"brk-local-0": 6}
    bad.control(200)
    healed = time.monotonic()
    wait_until(lambda: "brk-local-1" in spread(mesh, "/svc/brk/", 4), 3.0, interval=0.1, what="breaker closed")
    print(f"\nbreaker closed {time.monotonic() - healed:.1f} s after the backend healed (cooldown 2 s)")


def test_a_hung_replica_leaves_rotation_and_comes_back(mesh):
    """SIGSTOP: the port still accepts, nothing answers. Each request it holds times out (500 ms)
    and is retried on another replica, which HAProxy's breaker does not count; the controller's
    outlier ejection takes it out after 3 such failures in a row, and HAProxy's check (every 1 s
    cooldown while it is down) brings it back once it answers."""
    victim = mesh.backends["hang-local-1"]
    ejections = mesh.controller.metrics.ejections.labels("svc_hang")
    before = ejections._value.get()
    errors, stop = [], threading.Event()

    def load() -> None:
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not stop.is_set():
                answer = client.get(f"{mesh.proxy.url}/svc/hang/")
                if answer.status_code != 200:
                    errors.append(answer.status_code)

    def in_rotation() -> bool:
        return mesh.server("svc_hang", "hang-local-1").in_rotation

    with ThreadPoolExecutor(4) as pool:
        try:
            for _ in range(4):
                pool.submit(load)
            os.kill(victim.proc.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                wait_until(lambda: not in_rotation(), 3.0, interval=0.05, what="the hung replica out of rotation")
                out_after = time.monotonic() - stopped
                time.sleep(1.5)  # its checks time out meanwhile: it stays out
                assert not in_rotation()
            finally:
                os.kill(victim.proc.pid, signal.SIGCONT)
            resumed = time.monotonic()
            wait_until(in_rotation, 4.0, interval=0.05, what="the replica back once it answers")
            back_after = time.monotonic() - resumed
        finally:
            stop.set()
    print(f"\nhung replica out after {out_after:.1f} s, back {back_after:.1f} s after it answered again")
    assert errors == []  # every request it held was answered by another replica
    assert ejections._value.get() == before + 1  # the controller's outlier ejection, not a check


def test_a_post_is_never_sent_twice(mesh):
    """A request that outlives the timeout is retried on another replica, unless the server may have
    acted on it: a POST is sent once (the proxy's log counts the attempts)."""
    def attempts(method: str) -> str:
        answer = mesh.http.request(method, f"{mesh.proxy.url}/svc/hang/slow?sleep=0.8")
        assert answer.status_code == 504, answer.text
        request_id = answer.headers["x-request-id"]
        entry = wait_until(lambda: next((json.loads(line) for line in mesh.proxy.log().splitlines()
                                         if request_id in line and line.startswith("{")), None), 3, what="log line")
        return entry["retries"]

    assert attempts("GET") not in ("0", "+0")  # the test can tell: a GET is retried
    assert attempts("POST") == "0"


# --- (e) MCP sessions across reloads and membership changes --------------------------------------

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def mcp_open(client: httpx.Client, url: str) -> str:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "dataplane-test", "version": "0"}}}
    response = client.post(url, json=init, headers=MCP_HEADERS)
    assert response.status_code == 200, response.text
    session = response.headers["mcp-session-id"]
    notified = client.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                           headers={**MCP_HEADERS, "Mcp-Session-Id": session})
    assert notified.status_code in (200, 202), notified.text
    return session


def mcp_call(client: httpx.Client, url: str, session: str, n: int) -> int:
    response = client.post(url, json={"jsonrpc": "2.0", "id": n, "method": "tools/list"},
                           headers={**MCP_HEADERS, "Mcp-Session-Id": session})
    if response.status_code == 200:
        assert "tool_00" in response.text
    return response.status_code


def test_mcp_sessions_survive_reloads_and_replica_changes(mesh, mcp_python):  # noqa: F811
    procs = []

    def start_mcp(port: int) -> ServerProcess:
        proc = ServerProcess(mcp_python, "mcp_server.py", "--tools", "3", log_dir=mesh.root)
        proc.port, proc.cmd[proc.cmd.index("--port") + 1] = port, str(port)
        procs.append(proc.start())
        return proc

    try:
        planned = mesh.plan.instances_of("mcpx")
        for inst in planned:
            start_mcp(inst.port)
        for proc in procs:
            proc.wait_listening()
        for inst in planned:
            mesh.register("mcpx", inst.id, inst.port)
        url = f"{mesh.proxy.url}/mcp/mcpx"
        client = httpx.Client(trust_env=False, timeout=10)
        wait_until(lambda: all(mesh.server("svc_mcpx", i.id).admin == "ready" for i in planned), 2)
        sessions = [mcp_open(client, url) for _ in range(6)]
        assert len({p.live_sessions() > 0 for p in procs}) == 1  # both replicas hold sessions
        failures: list[tuple[str, int]] = []
        counter = iter(range(2, 10_000))

        def use_all(step: str) -> None:
            for s in sessions:
                status = mcp_call(client, url, s, next(counter))
                if status != 200:
                    failures.append((step, status))

        def handed_over() -> None:
            # Checked before any request: roundrobin alone would send the first sessions back to
            # the replicas that made them, so answers alone cannot tell a lost table from a kept one.
            pinned = set(re.findall(r" key=(\S+)", mesh.proxy.api.send("show table svc_mcpx")))
            assert set(sessions) <= pinned, f"the reload dropped {len(set(sessions) - pinned)} MCP sessions"

        use_all("before")
        mesh.proxy.reload()
        handed_over()
        use_all("after reload")

        third = start_mcp(free_port()).wait_listening()
        mesh.register("mcpx", "mcpx-extra-2", third.port)
        wait_until(lambda: any(s.port == third.port and s.admin == "ready"
                             for s in mesh.proxy.api.servers_state("svc_mcpx")), 1, what="third replica in")
        sessions += [mcp_open(client, url) for _ in range(6)]
        use_all("replica added")
        assert third.live_sessions() > 0

        mesh.deregister(planned[0].id)  # scale-in: its process still runs, its sessions drain
        wait_until(lambda: mesh.server("svc_mcpx", planned[0].id).admin == "drain", 1, what="drain")
        use_all("replica removed")
        mesh.proxy.reload()
        handed_over()
        use_all("second reload")
        fresh = [mcp_open(client, url) for _ in range(4)]
        sessions += fresh
        use_all("after everything")
        assert failures == []
    finally:
        for proc in procs:
            proc.stop()


# --- (f) rate limit ------------------------------------------------------------------------------

def test_rate_limit_answers_429_with_retry_after(mesh):
    time.sleep(1.1)
    responses = [mesh.get("/svc/limited/") for _ in range(12)]
    statuses = [r.status_code for r in responses]
    assert statuses[:5] == [200] * 5, statuses
    limited = [r for r in responses if r.status_code == 429]
    assert limited and limited[0].headers["Retry-After"] == "1"
    time.sleep(2.1)
    assert mesh.get("/svc/limited/").status_code == 200


# --- (g) trace context and request ids -----------------------------------------------------------

def test_traceparent_is_generated_or_passed_on_and_logged(mesh):
    seen = mesh.get("/svc/web/t").json()["headers"]
    lowered = {k.lower(): v for k, v in seen.items()}
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", lowered["traceparent"]), lowered
    trace_id = lowered["traceparent"].split("-")[1]
    assert lowered["x-request-id"] == trace_id

    given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = mesh.get("/svc/web/t", headers={"traceparent": given})
    assert {k.lower(): v for k, v in response.json()["headers"].items()}["traceparent"] == given
    request_id = response.headers["x-request-id"]

    def logged():
        for line in mesh.proxy.log().splitlines():
            if request_id in line and line.startswith("{"):
                return json.loads(line)
        return None

    entry = wait_until(logged, 3, what="JSON log line")
    assert entry["traceparent"] == given and entry["service"] == "web" and entry["status"] == 200


def test_prefix_mcp_and_host_routes_and_stats(mesh):
    assert mesh.get("/svc/web/a/b?x=1").json()["path"] == "/a/b"
    assert mesh.get("/svc/web").json()["path"] == "/"
    assert mesh.get("/anything", headers={"Host": "web.mesh"}).json()["path"] == "/anything"
    assert mesh.get("/nope").status_code == 404
    assert mesh.get("/healthz").status_code == 200
    metrics = httpx.get(mesh.proxy.stats_url + "/metrics", trust_env=False).text
    assert 'haproxy_backend_up{proxy="svc_web"}' in metrics or "haproxy_server_status" in metrics


def test_controller_reloads_hitlessly_when_the_shape_changes(mesh):
    old_pid = mesh.proxy.api.info()["Pid"]
    reloads = mesh.controller.metrics.reloads._value.get()
    services = [{**s, "routing": {"rate_limit": 6}} if s["name"] == "limited" else s for s in mesh.services]
    mesh.proxy.write_config(plan=mesh.replan(services))
    wait_until(lambda: mesh.proxy.api.info().get("Pid") != old_pid, 5, what="reload by the controller")
    wait_until(lambda: mesh.controller.metrics.reloads._value.get() == reloads + 1, 2, what="reload counted")
    assert len(spread(mesh, "/svc/rr/", 6)) == 3
    # a membership-only change (the plan, not the shape) never reloads
    pid = mesh.proxy.api.info()["Pid"]
    mesh.proxy.config.write_text(mesh.proxy.config.read_text() + "\n")
    time.sleep(0.6)
    assert mesh.proxy.api.info()["Pid"] == pid


def test_each_answer_is_counted_with_its_duration_after_reloads_too(mesh):
    """The controller's histogram counts every answer through the proxy from HAProxy's request log,
    and the answers over the service's SLO (1.5 s by default) apart, on the process a reload started."""
    def sample(name: str, **labels) -> float:
        return mesh.controller.metrics.registry.get_sample_value(name, {"proxy": "svc_web", **labels}) or 0.0

    def figures() -> tuple[float, float, float]:
        return (sample("meshspec_proxy_request_duration_seconds_count"),
                sample("meshspec_proxy_request_duration_seconds_bucket", le="1.5"),
                sample("meshspec_proxy_responses_over_slo_total"))

    old_pid = mesh.proxy.api.info()["Pid"]
    services = [{**s, "routing": {"rate_limit": 7}} if s["name"] == "limited" else s for s in mesh.services]
    mesh.proxy.write_config(plan=mesh.replan(services))
    # (a first process waits out its peers' resync, some seconds, before a reload may start)
    wait_until(lambda: mesh.proxy.api.info().get("Pid") != old_pid, 15, what="reload by the controller")
    time.sleep(0.5)  # the controller follows the new process's log
    count, fast, over = figures()
    for _ in range(20):
        assert mesh.get("/svc/web/fast").status_code == 200
    for _ in range(3):
        assert mesh.get("/svc/web/slow?sleep=1.7").status_code == 200
    wait_until(lambda: figures()[0] == count + 23, 5, what="23 answers counted")
    assert figures() == (count + 23, fast + 20, over + 3)


def test_controller_health_and_metrics_and_last_known_good(mesh):
    from aiohttp.test_utils import TestClient, TestServer

    async def fetch():
        async with TestClient(TestServer(mesh.controller.app())) as client:
            health = await client.get("/health")
            metrics = await client.get("/metrics")
            return health.status, await health.json(), await metrics.text()

    code, health, metrics = asyncio.run(fetch())
    assert code == 200 and health["haproxy"] and health["consul"], health
    for name in ("meshspec_controller_applied_changes_total", "meshspec_controller_sync_lag_seconds_bucket",
                 "meshspec_controller_last_applied_index", "meshspec_controller_errors_total"):
        assert name in metrics

    before = {s.name: s.admin for s in mesh.proxy.api.servers_state("svc_rr")}
    mesh.agent.stop()
    try:
        wait_until(lambda: not mesh.controller.consul_ok, 15, what="controller notices Consul is gone")
        time.sleep(0.5)
        assert {s.name: s.admin for s in mesh.proxy.api.servers_state("svc_rr")} == before
        assert len(spread(mesh, "/svc/rr/", 6)) == 3  # still serving the last-known-good set
    finally:
        mesh.agent.start()
