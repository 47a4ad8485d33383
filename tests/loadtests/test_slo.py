"""`locust -f loadtests/locustfile.py --headless` against the running mesh (the MESH_* settings):
a short bounded run meets the shipped SLOs, and an SLO tighter than the mesh can meet makes the run
exit non-zero, naming that SLO. Fails when the settings' proxy does not answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from meshspec import settings
from meshspec.converge.mesh import configured_mesh
from meshspec.render.haproxy import proxy_instance

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"
BOUNDED = ["--headless", "-u", "10", "-r", "5", "-t", "8s", "--stop-timeout", "5", "--only-summary"]


@pytest.fixture(scope="module")
def proxy_url() -> str:
    plan = configured_mesh().plan
    front = proxy_instance(plan)
    url = f"http://{front.address}:{front.port}"
    try:
        httpx.get(f"{url}/healthz", trust_env=False, timeout=2).raise_for_status()
    except httpx.HTTPError as err:
        # A failure, not a skip: in `make test` a dead proxy must not pass as "not measured".
        pytest.fail(f"no mesh proxy answers at {url} (MESH_PORT_OFFSET={settings.port_offset()}): {err}")
    return url


def locust(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LOCUST), "-f", "loadtests/locustfile.py", *BOUNDED, "--csv", str(tmp_path / "run"),
                           "--html", str(tmp_path / "run.html"), *extra], cwd=REPO, capture_output=True, text=True,
                          timeout=90)


def test_a_short_run_meets_the_shipped_slos(proxy_url, tmp_path):
    done = locust(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SLOs met" in done.stderr
    stats = (tmp_path / "run_stats.csv").read_text()
    assert "http /svc/" in stats and "mcp " in stats and "tools/call" in stats
    assert (tmp_path / "run.html").stat().st_size > 1000


def test_a_tighter_slo_than_the_mesh_meets_fails_the_run_naming_it(proxy_url, tmp_path):
    slo = tmp_path / "slo.yaml"
    slo.write_text("overall: {failure_ratio: 0.5}\nclasses:\n  McpSessionUser: {p99_ms: 1}\n")
    done = locust(tmp_path, "--slo-file", str(slo))
    assert done.returncode == 1, done.stderr[-3000:]
    missed = [line for line in done.stderr.splitlines() if line.startswith("SLO missed: ")]
    assert len(missed) == 1 and missed[0].startswith("SLO missed: McpSessionUser p99 "), missed
    assert missed[0].endswith("> 1 ms"), missed
