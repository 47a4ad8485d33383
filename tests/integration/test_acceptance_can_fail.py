"""The acceptance suites can fail: pointed at a mesh that is not there, the BDD suite's "Given the
mesh under test" and the Locust SLO run fail (exit 1, not a skip), and the step comparing what
runs with the plan fails on a difference. `make test` runs them against a real mesh, where a pass
then means something."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meshspec.spec import load_spec
from tests.bdd.steps_mesh import compare_running
from tests.integration.meshrun import REPO
from tests.support import free_port

pytestmark = pytest.mark.integration


def pytest_against_no_mesh(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """pytest on the acceptance suites with settings that name a mesh nobody deployed: an empty state
    dir, and an offset that moves the spec's ports onto free ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "CONSUL_HTTP"))}
    proxy_port = next(s.port for s in load_spec(REPO / "mesh_spec.yaml").services if s.name == "mesh-proxy")
    env |= {"MESH_STATE_DIR": str(tmp_path / "none"), "MESH_PORT_OFFSET": str(free_port() - proxy_port)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_slo_run_fails_when_no_proxy_answers(tmp_path):
    done = pytest_against_no_mesh(tmp_path, "tests/loadtests/test_slo.py")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "no mesh proxy answers" in done.stdout and " skipped" not in done.stdout, done.stdout[-2000:]


def test_the_mesh_under_test_must_answer(tmp_path):
    done = pytest_against_no_mesh(tmp_path, "tests/bdd", "--mesh=running", "-k", "Verify_checks_the_whole_mesh_in_seconds")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "no mesh answers" in done.stdout and "1 failed" in done.stdout, done.stdout[-2000:]


def test_what_runs_must_be_what_is_planned():
    compare_running({"a-local-0", "b-local-0"}, {"a-local-0", "b-local-0"})
    with pytest.raises(AssertionError, match=r"running but not planned: \['liar'\]; planned but not running: \['b-local-0'\]"):
        compare_running({"a-local-0", "b-local-0"}, {"a-local-0", "liar"})
