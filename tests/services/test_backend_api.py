"""backend-api as a subprocess against real PostgreSQL, RabbitMQ and the embedded agent."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid

import aio_pika
import httpx
import pytest

from tests.agent.conftest import AgentProcess, Target, free_port, wait_until
from tests.services.helpers import register

pytest_plugins = ["tests.services.backing_servers"]
pytestmark = pytest.mark.integration

API = "/api/v1/mesh"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def check_output(instance: dict) -> str:
    return next(c["output"] for c in instance["checks"] if c["id"] == f"service:{instance['id']}")


@pytest.fixture
def target():
    server = Target().start()
    yield server
    server.stop()


def test_health_reports_each_dependency_with_latency(backend_api):
    resp = httpx.get(backend_api.url + "/health", timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"consul", "postgresql", "rabbitmq"}
    for name, dep in body["dependencies"].items():
        assert dep["ok"] is True, (name, dep)
        assert 0 <= dep["latency_ms"] < 3000
    assert body["dependencies"]["rabbitmq"]["detail"].keys() == {"messages", "consumers"}
    assert body["dependencies"]["consul"]["detail"]["leader"]
    assert body["routing"] == "consul"


def test_services_topology_and_health_reflect_registrations(backend_api, consul_client):
    web, db, cache = unique("web"), unique("db"), unique("cache")
    meta = {"managed-by": "meshspec", "mesh": "test", "kind": "core", "version": "1", "host": "local",
            "runtime": "process", "spec-hash": "x"}
    register(consul_client, db, free_port(), meta={**meta, "kind": "database"}, tags=["sql"], output="db ok")
    register(consul_client, cache, free_port(), "warning", meta={**meta, "kind": "database"}, output="slow: 429")
    web_ports = [free_port(), free_port()]
    register(consul_client, web, web_ports[0], meta={**meta, "depends-on": f"{db},{cache},gone"}, tags=["web"])
    register(consul_client, web, web_ports[1], "critical", meta={**meta, "depends-on": f"{db},{cache},gone"},
             tags=["web", "v2"], output="connection refused")

    services = {s["name"]: s for s in httpx.get(backend_api.url + f"{API}/services", timeout=10).json()["services"]}
    assert services[db]["kind"] == "database" and services[db]["status"] == "passing"
    assert services[db]["tags"] == ["sql"]
    assert services[cache]["status"] == "warning"
    w = services[web]
    assert w["kind"] == "core" and w["tags"] == ["v2", "web"] and w["status"] == "critical"
    assert w["counts"] == {"passing": 1, "warning": 0, "critical": 1}
    assert sorted((i["address"], i["port"], i["status"]) for i in w["instances"]) == sorted(
        [("127.0.0.1", web_ports[0], "passing"), ("127.0.0.1", web_ports[1], "critical")])
    only_db = httpx.get(backend_api.url + f"{API}/services", params={"kind": "database"}, timeout=10).json()
    assert {db, cache} <= {s["name"] for s in only_db["services"]} and web not in {s["name"] for s in only_db["services"]}

    topo = httpx.get(backend_api.url + f"{API}/topology", timeout=10).json()
    assert {web, db, cache} <= {n["id"] for n in topo["nodes"]}
    mine = {(e["source"], e["target"], e["target_registered"]) for e in topo["edges"] if e["source"] == web}
    assert mine == {(web, db, True), (web, cache, True), (web, "gone", False)}

    health = httpx.get(backend_api.url + f"{API}/health", timeout=10).json()
    by_id = {i["id"]: i for i in health["instances"]}
    assert by_id[f"{web}-{web_ports[1]}"]["status"] == "critical"
    cache_id = f"{cache}-{services[cache]['instances'][0]['port']}"
    assert check_output(by_id[f"{web}-{web_ports[1]}"]) == "connection refused"
    assert check_output(by_id[cache_id]) == "slow: 429"
    for status in ("passing", "warning", "critical"):  # the counts are the instances' and checks' own
        assert health["instances_by_status"][status] == sum(i["status"] == status for i in health["instances"])
        assert health["checks"][status] == sum(c["status"] == status for i in health["instances"] for c in i["checks"])
    assert health["instances_by_status"]["critical"] >= 1 and health["instances_by_status"]["warning"] >= 1


def test_proxy_reaches_a_passing_instance_found_in_consul(backend_api, consul_client, target):
    name = unique("echo")
    register(consul_client, name, target.port)
    register(consul_client, name, free_port(), "critical")  # never chosen: not passing
    target.body = b"hello from target"
    for _ in range(3):
        resp = httpx.post(backend_api.url + f"{API}/proxy", timeout=10, json={
            "service": name, "method": "post", "path": "/things?x=1", "headers": {"X-Test": "yes"},
            "body": {"a": 1}, "timeout_s": 5})
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["status"] == 200 and answer["body"] == "hello from target"
        assert answer["route"] == {"via": "consul", "url": f"http://127.0.0.1:{target.port}/things?x=1",
                                   "instance": f"{name}-{target.port}"}
    method, path, headers, body = target.requests[-1]
    assert (method, path, headers["X-Test"], json.loads(body)) == ("POST", "/things?x=1", "yes", {"a": 1})
    assert headers["Content-Type"] == "application/json"

    target.status = 503
    answer = httpx.post(backend_api.url + f"{API}/proxy", json={"service": name}, timeout=10).json()
    assert answer["status"] == 503  # the service's answer is returned, not turned into an error


def test_proxy_errors_are_clear(backend_api, consul_client):
    resp = httpx.post(backend_api.url + f"{API}/proxy", json={"service": unique("nothing")}, timeout=10)
    assert resp.status_code == 503 and "no passing instance" in resp.json()["error"]
    dead = unique("dead")
    register(consul_client, dead, free_port())  # registered, passing, but nothing listens
    resp = httpx.post(backend_api.url + f"{API}/proxy", json={"service": dead, "timeout_s": 3}, timeout=10)
    assert resp.status_code == 502, resp.text
    assert "unreachable" in resp.json()["error"] and resp.json()["route"]["via"] == "consul"


def test_proxy_goes_through_the_mesh_proxy_when_configured(start_service, deps_env, target):
    """With MESH_PROXY_URL the request goes to <proxy>/svc/<name><path> (the proxy strips the prefix)."""
    api = start_service("backend_api", deps_env | {"MESH_PROXY_URL": f"http://127.0.0.1:{target.port}/"})
    resp = httpx.post(api.url + f"{API}/proxy", timeout=10,
                      json={"service": "some-svc", "method": "PUT", "path": "/a/b?c=d", "body": "raw"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["route"] == {"via": "proxy", "url": f"http://127.0.0.1:{target.port}/svc/some-svc/a/b?c=d",
                                    "instance": None}
    assert target.requests[-1][:2] == ("PUT", "/svc/some-svc/a/b?c=d") and target.requests[-1][3] == b"raw"
    assert httpx.get(api.url + "/health", timeout=10).json()["routing"] == "proxy"


def test_bad_input_is_a_clear_4xx_never_a_traceback(backend_api):
    cases = [
        ("POST", f"{API}/proxy", b"{not json", 422, "invalid MeshRequest"),
        ("POST", f"{API}/proxy", json.dumps({"service": "x", "path": "no-slash"}).encode(), 422, "invalid MeshRequest"),
        ("POST", f"{API}/proxy", json.dumps({"service": "x", "method": "BREW"}).encode(), 422, "invalid MeshRequest"),
        ("POST", f"{API}/proxy", json.dumps({"service": "../x"}).encode(), 422, "invalid MeshRequest"),
        ("POST", f"{API}/proxy", json.dumps({"service": "x", "path": "/../../mcp/y"}).encode(), 422, "invalid MeshRequest"),
        ("POST", f"{API}/proxy", json.dumps({"service": "x", "path": "/a/%2E%2e/b?q=1"}).encode(), 422, "invalid MeshRequest"),
        ("POST", f"{API}/proxy", json.dumps({"service": "x", "path": "/./a"}).encode(), 422, "invalid MeshRequest"),
        ("POST", f"{API}/proxy", json.dumps({"service": "x", "timeout_s": 0}).encode(), 422, "invalid MeshRequest"),
        ("POST", f"{API}/enqueue", json.dumps({"kind": "nope"}).encode(), 422, "unknown job kind 'nope'"),
        ("POST", f"{API}/enqueue", json.dumps({"kind": "sleep", "payload": {"seconds": 999}}).encode(), 422,
         "invalid payload for 'sleep'"),
        ("POST", f"{API}/enqueue", json.dumps({"payload": {}}).encode(), 422, "invalid EnqueueRequest"),
        ("GET", f"{API}/results/not-a-uuid", b"", 404, "job ids are UUIDs"),
        ("GET", f"{API}/results/{uuid.uuid4()}", b"", 404, "no job"),
        ("GET", "/api/v1/nothing-here", b"", 404, "Not Found"),
        ("DELETE", f"{API}/services", b"", 405, "Method Not Allowed"),
    ]
    for method, path, body, status, message in cases:
        resp = httpx.request(method, backend_api.url + path, content=body, timeout=10)
        assert resp.status_code == status, (path, body, resp.text)
        assert resp.headers["content-type"].startswith("application/json"), resp.text
        assert message in resp.json()["error"], (path, resp.text)
        assert "Traceback" not in resp.text
    problems = httpx.post(backend_api.url + f"{API}/proxy", json={"service": "x", "path": "p"}).json()["problems"]
    assert problems[0]["loc"] == "path"
    climbs = httpx.post(backend_api.url + f"{API}/proxy", json={"service": "x", "path": "/a/%2e%2e/b"}).json()["problems"]
    assert climbs[0]["loc"] == "path" and "no '.' or '..' segment" in climbs[0]["msg"]


def test_enqueue_records_the_job_and_publishes_it_persistently(start_service, deps_env, rabbitmq):
    """On a queue no worker consumes: the row says queued, the message waits there, persistent."""
    queue = unique("unconsumed")
    api = start_service("backend_api", deps_env, ["--queue", queue])
    resp = httpx.post(api.url + f"{API}/enqueue", json={"kind": "sha256", "payload": {"data": "abc"}}, timeout=10)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert resp.headers["Location"] == f"{API}/results/{job_id}"
    job = httpx.get(api.url + f"{API}/results/{job_id}", timeout=10).json()
    assert job["status"] == "queued" and job["kind"] == "sha256" and job["payload"] == {"data": "abc"}
    assert job["created_at"] and job["started_at"] is None and job["result"] is None

    async def take():
        conn = await aio_pika.connect(rabbitmq.url)
        async with conn:
            q = await (await conn.channel()).declare_queue(queue, durable=True)
            msg = await q.get(timeout=5)
            await msg.ack()
            return msg

    msg = asyncio.run(take())
    assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert json.loads(msg.body) == {"id": job_id, "kind": "sha256", "payload": {"data": "abc"}}


def test_health_is_degraded_while_postgresql_is_down_and_recovers(backend_api, postgres):
    """Degraded, not 503: the proxy's liveness check must not eject every replica for a shared
    dependency; the endpoint that needs PostgreSQL answers 503 naming it."""
    assert httpx.get(backend_api.url + "/health", timeout=10).json()["status"] == "ok"
    postgres.stop()
    try:
        resp = httpx.get(backend_api.url + "/health", timeout=15)
        assert resp.status_code == 200 and resp.json()["status"] == "degraded", resp.text
        deps = resp.json()["dependencies"]
        assert deps["postgresql"]["ok"] is False and deps["postgresql"]["error"]
        assert deps["consul"]["ok"] and deps["rabbitmq"]["ok"]
        resp = httpx.get(backend_api.url + f"{API}/results/{uuid.uuid4()}", timeout=15)
        assert resp.status_code == 503 and "postgresql" in resp.json()["error"]
    finally:
        postgres.start()
    wait_until(lambda: httpx.get(backend_api.url + "/health", timeout=15).json()["status"] == "ok", 30, interval=0.5)


def test_consul_token_is_read_from_a_file(start_service, deps_env, tmp_path):
    """With ACLs on, backend-api reads Consul with the token from MESH_CONSUL_TOKEN_FILE; without it, health says so."""
    token = uuid.uuid4().hex
    agent = AgentProcess(tmp_path / "acl-agent", token=token).start()
    try:
        name = unique("private")
        register(agent.client(token), name, free_port())
        (tmp_path / "token").write_text(token + "\n")
        env = deps_env | {"MESH_CONSUL_ADDR": agent.address}
        api = start_service("backend_api", env | {"MESH_CONSUL_TOKEN_FILE": str(tmp_path / "token")})
        assert httpx.get(api.url + "/health", timeout=10).json()["status"] == "ok"
        names = [s["name"] for s in httpx.get(api.url + f"{API}/services", timeout=10).json()["services"]]
        assert name in names

        anonymous = start_service("backend_api", env)
        resp = httpx.get(anonymous.url + "/health", timeout=10)
        assert resp.json()["status"] == "degraded", resp.text
        assert "filters the catalog by ACLs" in resp.json()["dependencies"]["consul"]["error"]
        listing = httpx.get(anonymous.url + f"{API}/services", timeout=10).json()
        assert listing["acl_filtered"] is True and name not in [s["name"] for s in listing["services"]]
        wrong = tmp_path / "wrong-token"
        wrong.write_text(uuid.uuid4().hex)
        unknown = start_service("backend_api", env | {"MESH_CONSUL_TOKEN_FILE": str(wrong)})
        resp = httpx.get(unknown.url + f"{API}/services", timeout=10)
        assert resp.status_code == 502 and "consul answered 403" in resp.json()["error"]
    finally:
        agent.stop()


ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@pytest.fixture
def alertmanager(tmp_path):
    """Debian's Alertmanager on a free port, receiving nothing but what a test posts."""
    if not shutil.which(ALERTMANAGER):
        pytest.skip("apt-get install prometheus-alertmanager")
    port = free_port()
    (tmp_path / "am.yml").write_text("route: {receiver: none}\nreceivers: [{name: none}]\n")
    with open(tmp_path / "am.log", "wb") as log:
        proc = subprocess.Popen([ALERTMANAGER, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False  # not listening yet

        wait_until(ready, 20, what="Alertmanager ready")
        yield port, url
    finally:
        proc.terminate()
        proc.wait(10)


def test_alerts_lists_alertmanager_s_active_alerts_with_a_severity(start_service, deps_env, consul_client, alertmanager):
    port, url = alertmanager
    name = unique("alerts")
    register(consul_client, name, port)
    api = start_service("backend_api", deps_env, ["--alerts-service", name])
    posted = [{"labels": {"alertname": "MeshInstanceDown", "severity": "critical", "instance_id": "x-local-0"},
               "annotations": {"summary": "x-local-0 has not answered its metrics scrape for 1m"}},
              {"labels": {"alertname": "MeshServiceSlow", "severity": "warning", "proxy": "svc_y"}},
              {"labels": {"alertname": "MeshspecProbe", "nonce": "n"}}]  # no severity: the checker's probe
    assert httpx.post(f"{url}/api/v2/alerts", json=posted, timeout=5).status_code == 200
    answer = httpx.get(api.url + f"{API}/alerts", timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(a["name"], a["severity"]) for a in body["alerts"]] == [("MeshInstanceDown", "critical"),
                                                                    ("MeshServiceSlow", "warning")]
    assert body["alerts"][0]["summary"] == "x-local-0 has not answered its metrics scrape for 1m"
    assert body["alerts"][0]["labels"] == {"instance_id": "x-local-0"}
    assert body["source"]["instance"] == f"{name}-{port}"  # who answered

    consul_client.agent.service.deregister(f"{name}-{port}")
    gone = httpx.get(api.url + f"{API}/alerts", timeout=10)
    assert gone.status_code == 503 and f"no passing instance of service {name!r}" in gone.json()["error"]


def test_proxy_relays_a_body_that_arrives_in_many_segments_whole(backend_api, consul_client, target):
    """One read of the stream returned only what had arrived: a 4 kB list of alerts came back cut."""
    name = unique("big")
    register(consul_client, name, target.port)
    target.body = b"x" * 300_000
    answer = httpx.post(backend_api.url + f"{API}/proxy", json={"service": name}, timeout=10).json()
    assert answer["status"] == 200 and len(answer["body"]) == 300_000
