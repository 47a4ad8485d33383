"""Helpers for the services' tests (no fixtures: those are in backing_servers.py)."""

from __future__ import annotations

import consul
import httpx

from tests.agent.conftest import wait_until


def wait_for_job(api_url: str, job_id: str, statuses: tuple[str, ...] = ("done", "failed"), timeout: float = 30) -> dict:
    """Poll a job's result until its status is one of `statuses`."""
    def poll():
        resp = httpx.get(f"{api_url}/api/v1/mesh/results/{job_id}", timeout=5)
        assert resp.status_code == 200, resp.text
        job = resp.json()
        return job if job["status"] in statuses else None
    return wait_until(poll, timeout, interval=0.1)


def register(client, name: str, port: int, status: str = "passing", meta: dict[str, str] | None = None,
             tags: list[str] | None = None, output: str = "", address: str = "127.0.0.1") -> str:
    """Register one instance with a TTL check set to `status`; its service ID."""
    service_id = f"{name}-{port}"
    client.agent.service.register(name, service_id=service_id, address=address, port=port, tags=tags or [],
                                  meta=meta or {}, check=consul.Check.ttl("10m"))
    check_id = f"service:{service_id}"
    {"passing": client.agent.check.ttl_pass, "warning": client.agent.check.ttl_warn,
     "critical": client.agent.check.ttl_fail}[status](check_id, output)
    return service_id
