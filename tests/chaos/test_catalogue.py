"""`meshspec chaos run` against the running mesh (the MESH_* settings, as the load tests): the
experiments tagged `ci` pass, with their journals and the report's plots; and an experiment whose
tolerance cannot be met fails, naming the probe that missed. The process runtime only: the
registry agent's experiment keeps a program down through supervisord."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshspec import settings
from meshspec.converge.mesh import configured_mesh
from meshspec.render.haproxy import backend_name
from meshspec.runtime.proxy.runtime_api import RuntimeApi

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(settings.runtime().in_containers,
                                 reason="chaos experiments run against the process runtime's mesh (supervisord)")]
REPO = Path(__file__).resolve().parents[2]
MESHSPEC = Path(sys.executable).parent / "meshspec"


def chaos(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MESHSPEC), "chaos", "run", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_the_ci_experiments_pass_and_draw_their_plots(tmp_path):
    run = chaos("--tag", "ci", "--reports", str(tmp_path))
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    verdicts = [line for line in run.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert [v.split(":")[0] for v in verdicts] == ["PASS kill-backend-api-replica", "PASS kill-registry-agent"]
    for name in ("kill-backend-api-replica", "kill-registry-agent"):
        journal = json.loads((tmp_path / name / "journal.json").read_text())
        assert journal["status"] == "completed" and not journal["deviated"]
        assert (tmp_path / name / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 2


def _wait_for_rotation(service: str, within_s: float) -> None:
    """Every planned server of `service` in the proxy's rotation: the steady state an experiment
    starts from (the one before may have left a replica out for a few more seconds)."""
    mesh = configured_mesh()
    api, planned = RuntimeApi(mesh.plan.proxy_runtime), {i.id for i in mesh.plan.instances_of(service)}
    deadline = time.monotonic() + within_s
    while (out := planned - {s.name for s in api.servers_state(backend_name(service)) if s.in_rotation}):
        assert time.monotonic() < deadline, f"{sorted(out)} still out of rotation after {within_s} s"
        time.sleep(0.5)


def test_an_experiment_fails_when_its_tolerance_is_missed(tmp_path):
    _wait_for_rotation("backend-api", 60)
    experiment = json.loads((REPO / "chaos" / "kill-backend-api-replica.json").read_text())
    rotation = experiment["steady-state-hypothesis"]["probes"][1]["provider"]["arguments"]
    rotation["max_out_s"] = 0.0  # no proxy takes a dead server out the instant it dies
    experiment["method"][0]["provider"]["arguments"]["seconds"] = 12
    (tmp_path / "impossible.json").write_text(json.dumps(experiment))
    run = chaos(str(tmp_path / "impossible.json"), "--reports", str(tmp_path / "reports"))
    assert run.returncode == 1, run.stdout + run.stderr[-3000:]
    assert "FAIL impossible [completed, deviated]" in run.stdout and "rotation_held MISSED" in run.stdout, run.stdout
