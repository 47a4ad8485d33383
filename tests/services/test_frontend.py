"""frontend as a subprocess: the page and its assets are served, and its /api/ calls reach backend-api."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from meshspec.runtime.services import frontend as frontend_module
from tests.agent.conftest import free_port
from tests.services.helpers import register

pytest_plugins = ["tests.services.backing_servers"]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def frontend(start_service, backend_api):
    return start_service("frontend", args=["--api", backend_api.url], ready_path="/")


def test_page_and_assets_are_served(frontend):
    page = httpx.get(frontend.url + "/", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for needle in ("mesh status", 'id="services"', 'id="topology"', '"static/shared.js"', '"static/app.js"',
                   '"static/style.css"'):
        assert needle in page.text
    shared = httpx.get(frontend.url + "/static/shared.js", timeout=5)
    assert shared.status_code == 200 and '"api/v1/mesh"' in shared.text
    js = httpx.get(frontend.url + "/static/app.js", timeout=5)
    for path in ("/services", "/health", "/topology"):  # every endpoint the page polls
        assert f'getJSON("{path}")' in js.text
    dashboard = httpx.get(frontend.url + "/dashboard", timeout=5)
    assert dashboard.status_code == 200 and "mesh dashboard" in dashboard.text
    assert 'getJSON("/metrics")' in httpx.get(frontend.url + "/static/dashboard.js", timeout=5).text
    assert httpx.get(frontend.url + "/static/style.css", timeout=5).status_code == 200
    assert httpx.get(frontend.url + "/static/../frontend.py", timeout=5).status_code in (403, 404)


@pytest.mark.skipif(not shutil.which("node"), reason="node not installed")
def test_page_scripts_parse():
    for script in Path(frontend_module.STATIC).glob("*.js"):
        assert subprocess.run(["node", "--check", str(script)], capture_output=True).returncode == 0, script.name


def test_api_calls_reach_backend_api(frontend, backend_api, consul_client):
    name = f"shown-{uuid.uuid4().hex[:6]}"
    register(consul_client, name, free_port(), meta={"kind": "core", "depends-on": "postgresql"}, tags=["web"])
    for path in ("/api/v1/mesh/services", "/api/v1/mesh/topology", "/api/v1/mesh/health"):
        via_frontend = httpx.get(frontend.url + path, timeout=10)
        assert via_frontend.status_code == 200, via_frontend.text
        assert via_frontend.json() == httpx.get(backend_api.url + path, timeout=10).json()
    services = {s["name"]: s for s in httpx.get(frontend.url + "/api/v1/mesh/services?kind=core").json()["services"]}
    assert services[name]["tags"] == ["web"]

    # Statuses pass through; the page only reads, so nothing that writes is forwarded.
    assert httpx.get(frontend.url + "/api/v1/mesh/results/not-a-uuid").status_code == 404
    for method, path in (("POST", "/api/v1/mesh/enqueue"), ("POST", "/api/v1/mesh/proxy"), ("DELETE", "/api/v1/mesh/services")):
        resp = httpx.request(method, frontend.url + path, json={"kind": "sha256", "payload": {"data": "x"}})
        assert resp.status_code == 405 and "GET" in resp.headers["Allow"], (method, path, resp.status_code)


def test_backend_down_is_a_clear_502(start_service):
    lonely = start_service("frontend", args=["--api", f"http://127.0.0.1:{free_port()}"], ready_path="/")
    resp = httpx.get(lonely.url + "/api/v1/mesh/services", timeout=10)
    assert resp.status_code == 502 and "backend-api unreachable" in resp.json()["error"]
    assert httpx.get(lonely.url + "/", timeout=5).status_code == 200
