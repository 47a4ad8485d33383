"""Steps that check services through their own protocols (SQL, Redis, HTTP APIs), not their health."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import time
import uuid
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import pymysql
from pytest_bdd import parsers, then, when

from meshspec.common import scrape_meta
from meshspec.common.durations import parse_duration
from meshspec.render.monitoring import EVALUATION_INTERVAL, SCRAPE_INTERVAL, SD_REFRESH, SEVERITY_ROUTES, alert_rules
from meshspec.render.probes import probe
from meshspec.runtime.probes import protocols
from meshspec.verify.run import edge_headers
from tests.bdd.mesh_target import wait_for
from tests.bdd.steps_mesh import broke

HTTP = httpx.Client(trust_env=False, timeout=60)


def _base(world, service: str) -> str:
    inst = world.target.instances_of(service)[0]
    return f"http://{inst.address}:{inst.port}"


def _addr(world, service: str) -> tuple[str, int]:
    inst = world.target.instances_of(service)[0]
    return inst.address, inst.port


def _login(world, service: str) -> tuple[str, str]:
    """(user, password) of the service's credentials, from its probe's file (root's: as the checker)."""
    held = Path(world.target.plan.layout.probe_credentials_file(service)).read_text().strip()
    user, _, password = held.partition(":")
    return user, password


# each server's own refusal
REFUSED = ("password authentication failed", "ACCESS_REFUSED", "Access denied",
           "HELLO must be called with the client already authenticated", "invalid username-password pair")


@then(parsers.parse('"{service}" refuses a login as "{user}" with {password}'))
def _(world, service, user, password):
    """The service's own probe, as the plan renders it, logging in as `user` with the password the
    step names in place of the deploy's credentials: the refusal must be the server's."""
    rendered = asdict(probe(world.target.plan, world.target.instances_of(service)[0]))
    wrong = {"no password": None, "a wrong password": "not-" + _login(world, service)[1]}
    given = wrong[password] if password in wrong else password.removeprefix("the password ")
    rendered |= {"credentials_file": None, "options": {**rendered["options"], "user": user, "password": given}}
    result = protocols.KINDS[rendered["kind"]](rendered, 10)
    assert not result.ok and any(r in result.output for r in REFUSED), result.output


@then("PostgreSQL stores a row and returns it")
def _(world):
    host, port = _addr(world, "postgresql")
    token = uuid.uuid4().hex

    async def round_trip():
        user, password = _login(world, "postgresql")
        conn = await asyncpg.connect(host=host, port=port, user=user, password=password, database="postgres")
        try:
            await conn.execute("CREATE TEMP TABLE bdd_rows (token text)")
            await conn.execute("INSERT INTO bdd_rows VALUES ($1)", token)
            return await conn.fetchval("SELECT token FROM bdd_rows")
        finally:
            await conn.close()

    assert asyncio.run(round_trip()) == token


@then("MariaDB stores a row and returns it")
def _(world):
    host, port = _addr(world, "mariadb")
    token = uuid.uuid4().hex
    user, password = _login(world, "mariadb")
    conn = pymysql.connect(host=host, port=port, user=user, password=password, ssl_disabled=True, autocommit=True)
    try:
        with conn.cursor() as cursor:
            for statement in ("CREATE DATABASE IF NOT EXISTS test", "CREATE TEMPORARY TABLE test.bdd_rows (token TEXT)"):
                cursor.execute(statement)
            cursor.execute("INSERT INTO test.bdd_rows VALUES (%s)", (token,))
            cursor.execute("SELECT token FROM test.bdd_rows")
            assert cursor.fetchone() == (token,)
    finally:
        conn.close()


@then("Redis stores a key and returns it")
def _(world):
    host, port = _addr(world, "redis")
    key, value = f"bdd:{uuid.uuid4().hex}", uuid.uuid4().hex
    user, password = _login(world, "redis")
    cli = ["redis-cli", "-h", host, "-p", str(port), "--user", user]
    env = {**os.environ, "REDISCLI_AUTH": password}  # not in its command line, which `ps` shows
    assert subprocess.run([*cli, "SET", key, value, "EX", "60"], capture_output=True, text=True, env=env).stdout.strip() == "OK"
    assert subprocess.run([*cli, "GET", key], capture_output=True, text=True, env=env).stdout.strip() == value


@then(parsers.parse('the embeddings service returns a vector of {n:d} dimensions for "{text}"'))
def _(world, n, text):
    reply = HTTP.post(f"{_base(world, 'embeddings')}/api/embed", json={"input": [text]})
    assert reply.status_code == 200, reply.text
    [vector] = reply.json()["embeddings"]
    assert len(vector) == n and any(v != 0 for v in vector)


@then(parsers.parse('semantic search finds "{document}" first for "{query}"'))
def _(world, document, query):
    base = _base(world, "semantic-search")
    others = ["PostgreSQL stores relational data", "Redis keeps keys in memory"]
    indexed = HTTP.post(f"{base}/index", json={"documents": [{"text": t} for t in [document, *others]]})
    assert indexed.status_code == 200, indexed.text
    found = HTTP.post(f"{base}/search", json={"query": query, "k": 3}).json()["results"]
    assert found[0]["text"] == document, found


@then(parsers.parse('Prometheus answers the query "{query}" with 1 for every service that exports metrics'))
def _(world, query):
    expected = {s.name for s in world.target.plan.spec.services if s.metrics}
    deadline = time.monotonic() + 60  # a first scrape may still be due after a fresh deploy
    while True:
        result = HTTP.get(f"{_base(world, 'prometheus')}/api/v1/query", params={"query": query}).json()["data"]["result"]
        up = {r["metric"]["job"]: r["value"][1] for r in result}
        if up == dict.fromkeys(expected, "1") or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert up == dict.fromkeys(expected, "1")


@then(parsers.parse('a sha256 job of "{data}" enqueued at backend-api comes back with its digest'))
def _(world, data):
    base = _base(world, "backend-api")
    job = HTTP.post(f"{base}/api/v1/mesh/enqueue", json={"kind": "sha256", "payload": {"data": data}})
    assert job.status_code in (200, 201, 202), job.text
    job_id = job.json()["id"]
    deadline = time.monotonic() + 30
    while (result := HTTP.get(f"{base}/api/v1/mesh/results/{job_id}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, result
        time.sleep(0.2)
    assert result["status"] == "done" and hashlib.sha256(data.encode()).hexdigest() in str(result["result"]), result


def _status_page_alerts(world) -> list[dict]:
    """The active alerts as the status page reads them: the frontend's /api/, through the proxy."""
    url = world.target.proxy_url + "/svc/frontend/api/v1/mesh/alerts"
    answer = HTTP.get(url, headers=edge_headers(world.target.plan))
    assert answer.status_code == 200, f"{url}: HTTP {answer.status_code}: {answer.text[:300]}"
    return answer.json()["alerts"]


def _alerts_for(alerts: list[dict], name: str, instance_id: str) -> list[dict]:
    return [a for a in alerts if a["name"] == name and a["labels"].get("instance_id") == instance_id]


@then(parsers.parse('the status page lists no alert "{name}" for "{instance}"'))
def _(world, name, instance):
    found = _alerts_for(_status_page_alerts(world), name, world.target.instance(instance).id)
    assert not found, f"already firing before the fault: {found}"


@then(parsers.parse('within {seconds:d} s the status page lists the alert "{name}" for "{instance}"'))
def _(world, seconds, name, instance):
    started, instance_id = time.monotonic(), world.target.instance(instance).id
    found = wait_for(lambda: _alerts_for(_status_page_alerts(world), name, instance_id), seconds, interval=5)
    assert found, f"no {name} for {instance_id} on the status page within {seconds} s"
    print(f"{name} for {instance_id} on the status page {time.monotonic() - started:.0f} s after the stop: "
          f"{found[0]['summary']}")


def _prometheus_query(world, query: str) -> list[dict]:
    answer = HTTP.get(f"{_base(world, 'prometheus')}/api/v1/query", params={"query": query})
    assert answer.status_code == 200, f"Prometheus: HTTP {answer.status_code}: {answer.text[:300]}"
    return answer.json()["data"]["result"]


@when(parsers.parse('I register "{sid}" of service "{name}" by hand, exporting the metrics of "{instance}"'))
def _(world, sid, name, instance):
    """A registration no deploy wrote: a running exporter's metrics endpoint, under a new service."""
    inst = world.target.instance(instance)
    metrics = world.target.plan.service(inst.service).metrics
    port = inst.ports[metrics.port] if metrics.port else inst.port
    broke(world, lambda: world.target.consul().agent.service.deregister(sid))
    world.target.consul().agent.service.register(name, service_id=sid, address=inst.address, port=port,
                                                 meta={scrape_meta.PORT: str(port), scrape_meta.PATH: metrics.path})
    world.counters["registered_at"] = time.monotonic()


@then(parsers.parse('within {seconds:d} s Prometheus scrapes "{sid}" as job "{name}" and finds it up'))
def _(world, seconds, sid, name):
    query = f'up{{job="{name}", instance_id="{sid}"}} == 1'
    found = wait_for(lambda: _prometheus_query(world, query), seconds, interval=1)
    took = time.monotonic() - world.counters["registered_at"]
    assert found, f"Prometheus has no successful scrape of {sid} {seconds} s after its registration"
    series = _prometheus_query(world, f'count({{instance_id="{sid}"}})')
    print(f"{sid} scraped {took:.0f} s after its registration (targets every {SD_REFRESH}, scrapes every "
          f"{SCRAPE_INTERVAL}), {series[0]['value'][1]} series from it")


@then(parsers.parse("within {seconds:d} s Prometheus holds the checker's result and probe durations of every "
                    "check, each as the registry holds it"))
def _(world, seconds):
    """The checker's metrics file, exported by node-exporter's textfile collector and scraped by
    Prometheus, against the registry's own statuses of the checker's checks (`service:<instance>`)."""
    consul = world.target.consul()
    seen: dict = {}

    def agree() -> bool:
        held = {cid: c["Status"] for cid, c in consul.agent.checks().items() if cid.startswith("service:")}
        passing = {r["metric"]["check_id"]: r for r in _prometheus_query(world, "meshspec_checker_check_passing")}
        probes = {r["metric"]["check_id"]: float(r["value"][1])
                  for r in _prometheus_query(world, "meshspec_checker_probe_duration_seconds_count")}
        found = {cid: (status, passing[cid]["value"][1] if cid in passing else None, probes.get(cid))
                 for cid, status in held.items()}
        wrong = {cid: f for cid, f in found.items() if f[1] != ("1" if f[0] == "passing" else "0") or not f[2]}
        seen.update(held=held, passing=passing, probes=probes, wrong=wrong)
        return bool(held) and not wrong

    assert wait_for(agree, seconds, interval=2), ("Prometheus' checker series differ from the registry's checks "
                                                  f"(registry, Prometheus, probes): {seen['wrong'] or 'no check'}")
    exporters = sorted({r["metric"].get("instance_id", "?") for r in seen["passing"].values()})
    print(f"{len(seen['held'])} checks, each as the registry holds it ({sum(s == 'passing' for s in seen['held'].values())} "
          f"passing), {sum(seen['probes'].values()):.0f} probes counted; exported by {', '.join(exporters)}")


def _received_alerts(world, name: str) -> list[dict]:
    """The alerts backend-api's webhook stored, read through the proxy with the operator's key."""
    url = f"{world.target.proxy_url}/svc/backend-api/api/v1/mesh/alerts/received"
    answer = HTTP.get(url, params={"name": name}, headers=edge_headers(world.target.plan))
    assert answer.status_code == 200, f"{url}: HTTP {answer.status_code}: {answer.text[:300]}"
    return answer.json()["alerts"]


@then(parsers.parse('the alert store holds "{name}" for "{instance}", stored within its rule\'s for and one '
                    'evaluation of the fault\'s first sight'))
def _(world, name, instance):
    """Timed from when Prometheus first saw the fault (its alert's activeAt: the first evaluation
    after the first failed scrape), which fires it `for` later at an evaluation."""
    instance_id, plan = world.target.instance(instance).id, world.target.plan
    rule = next(r for r in alert_rules(plan) if r["alert"] == name)
    wait = next(w for severity, w, _, _ in SEVERITY_ROUTES if severity == rule["labels"]["severity"])
    bound = parse_duration(rule["for"]) + parse_duration(EVALUATION_INTERVAL) + parse_duration(wait)
    stored = wait_for(lambda: [a for a in _received_alerts(world, name) if a["status"] == "firing"
                               and a["labels"].get("instance_id") == instance_id], bound, interval=2)
    assert stored, f"no firing {name} for {instance_id} in the alert store"
    answer = HTTP.get(f"{_base(world, 'prometheus')}/api/v1/alerts").json()["data"]["alerts"]
    (seen,) = [a for a in answer if a["labels"]["alertname"] == name and a["labels"].get("instance_id") == instance_id]
    received = datetime.fromisoformat(stored[-1]["received_at"])
    took = (received - datetime.fromisoformat(seen["activeAt"])).total_seconds()
    print(f"{name} for {instance_id} stored by the webhook ({stored[-1]['receiver']}) {took:.1f} s after Prometheus "
          f"first saw it, {received.timestamp() - world.counters['stopped_at']:.0f} s after the stop (for "
          f"{rule['for']}, evaluation every {EVALUATION_INTERVAL}, scrape every {SCRAPE_INTERVAL}, group_wait {wait})")
    assert took <= bound, f"stored {took:.1f} s after Prometheus first saw it: more than {bound:.0f} s"


@then("the alert webhook refuses the operator's key")
def _(world):
    url = f"{world.target.proxy_url}/svc/backend-api/api/v1/mesh/alerts/webhook"
    answer = HTTP.post(url, json={"version": "4", "receiver": "forged", "alerts": []},
                       headers=edge_headers(world.target.plan))
    assert answer.status_code == 403 and "alert-webhook" in answer.text, f"HTTP {answer.status_code}: {answer.text}"
