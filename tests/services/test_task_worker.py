"""task-worker as a subprocess: jobs enqueued through backend-api, run for real, results in PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from datetime import datetime

import aio_pika
import httpx
import pytest

from tests.agent.conftest import Target, free_port, wait_until
from tests.services.helpers import register, wait_for_job

pytest_plugins = ["tests.services.backing_servers"]
pytestmark = pytest.mark.integration

API = "/api/v1/mesh"


def enqueue(api_url: str, kind: str, payload: dict) -> str:
    resp = httpx.post(f"{api_url}{API}/enqueue", json={"kind": kind, "payload": payload}, timeout=10)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def publish(amqp_url: str, queue: str, body: bytes) -> None:
    async def go():
        conn = await aio_pika.connect(amqp_url)
        async with conn:
            channel = await conn.channel()
            await channel.declare_queue(queue, durable=True)
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue)
    asyncio.run(go())


def test_sha256_job_enqueued_runs_and_its_result_is_read_back(backend_api, task_worker):
    job_id = enqueue(backend_api.url, "sha256", {"data": "hello, mesh ✓"})
    job = wait_for_job(backend_api.url, job_id)
    assert job["status"] == "done", job
    expected = hashlib.sha256("hello, mesh ✓".encode()).hexdigest()
    assert job["result"] == {"algorithm": "sha256", "digest": expected, "bytes": len("hello, mesh ✓".encode())}
    assert job["error"] is None and job["attempts"] == 1
    created, started, finished = (datetime.fromisoformat(job[k]) for k in ("created_at", "started_at", "finished_at"))
    assert created <= started <= finished


def test_mesh_request_job_calls_a_service_found_in_consul(backend_api, task_worker, consul_client):
    target = Target().start()
    try:
        target.body = b'{"pong": true}'
        name = f"pong-{uuid.uuid4().hex[:6]}"
        register(consul_client, name, target.port)
        job = wait_for_job(backend_api.url, enqueue(backend_api.url, "mesh-request",
                                                    {"service": name, "path": "/ping", "method": "GET"}))
        assert job["status"] == "done", job
        assert job["result"]["status"] == 200 and job["result"]["body"] == '{"pong": true}'
        assert job["result"]["route"]["via"] == "consul" and target.requests[-1][1] == "/ping"

        job = wait_for_job(backend_api.url, enqueue(backend_api.url, "mesh-request", {"service": "no-such-svc"}))
        assert job["status"] == "failed" and "no passing instance of service 'no-such-svc'" in job["error"]
    finally:
        target.stop()


def test_unknown_kind_and_bad_payload_from_other_producers_fail_the_job(backend_api, task_worker, rabbitmq):
    """backend-api refuses them (422); a message published by anyone else fails its job with a clear error."""
    unknown, bad = uuid.uuid4(), uuid.uuid4()
    publish(rabbitmq.url, "meshspec.jobs", json.dumps({"id": str(unknown), "kind": "transmogrify", "payload": {}}).encode())
    publish(rabbitmq.url, "meshspec.jobs", json.dumps({"id": str(bad), "kind": "sleep", "payload": {"seconds": -1}}).encode())
    publish(rabbitmq.url, "meshspec.jobs", b"not json at all")  # rejected, not requeued forever
    job = wait_for_job(backend_api.url, str(unknown))
    assert job["status"] == "failed" and job["error"].startswith("unknown job kind 'transmogrify'; known kinds:")
    job = wait_for_job(backend_api.url, str(bad))
    assert job["status"] == "failed" and "invalid payload for 'sleep': seconds:" in job["error"]
    wait_until(lambda: httpx.get(task_worker.url + "/health").json()["jobs"]["rejected"] >= 1, 10)


def test_sleep_jobs_run_concurrently(backend_api, task_worker):
    started = time.monotonic()
    ids = [enqueue(backend_api.url, "sleep", {"seconds": 1.0}) for _ in range(4)]
    jobs = [wait_for_job(backend_api.url, i) for i in ids]
    elapsed = time.monotonic() - started
    assert all(j["status"] == "done" and j["result"]["slept_s"] >= 1.0 for j in jobs), jobs
    assert elapsed < 3.0, f"4 × 1 s took {elapsed:.1f}s: not concurrent"


def test_worker_killed_before_ack_job_is_redelivered_and_completed_once(start_service, deps_env, rabbitmq):
    queue = f"crash-{uuid.uuid4().hex[:6]}"
    api = start_service("backend_api", deps_env, ["--queue", queue])
    first = start_service("task_worker", deps_env, ["--queue", queue, "--prefetch", "1"])
    job_id = enqueue(api.url, "sleep", {"seconds": 2.0})
    running = wait_for_job(api.url, job_id, ("running",))
    assert running["attempts"] == 1
    first.kill()  # SIGKILL mid-job: no result committed, no ack

    second = start_service("task_worker", deps_env, ["--queue", queue, "--prefetch", "1"])
    job = wait_for_job(api.url, job_id, timeout=30)
    assert job["status"] == "done" and job["attempts"] == 2 and job["result"]["slept_s"] >= 2.0, job

    # A redelivery of a finished job (a worker dying between commit and ack) is acked, not run again.
    publish(rabbitmq.url, queue, json.dumps({"id": job_id, "kind": "sleep", "payload": {"seconds": 2.0}}).encode())
    wait_until(lambda: httpx.get(second.url + "/health").json()["jobs"]["duplicate"] == 1, 10)
    again = httpx.get(f"{api.url}{API}/results/{job_id}").json()
    assert again == job
    assert httpx.get(second.url + "/health").json()["jobs"]["done"] == 1


def test_health_and_metrics(task_worker, start_service, deps_env, backend_api):
    wait_for_job(backend_api.url, enqueue(backend_api.url, "sha256", {"data": "metrics"}))
    resp = httpx.get(task_worker.url + "/health", timeout=5)
    assert resp.status_code == 200
    body = resp.json()
    assert body["consumer"]["connected"] is True and body["consumer"]["queue"] == "meshspec.jobs"
    assert body["jobs"]["done"] >= 1 and "failed" in body["jobs"]

    metrics = httpx.get(task_worker.url + "/metrics", timeout=5)
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'meshspec_worker_jobs_total{kind="sha256",outcome="done"}' in metrics.text
    assert "meshspec_worker_consumer_connected 1.0" in metrics.text
    assert "meshspec_worker_job_duration_seconds_bucket" in metrics.text

    # No broker: the worker runs, says why, and is not healthy.
    orphan = start_service("task_worker", deps_env | {"MESH_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"})
    resp = httpx.get(orphan.url + "/health", timeout=5)
    assert resp.status_code == 503
    assert resp.json()["consumer"]["connected"] is False and resp.json()["consumer"]["last_error"]
