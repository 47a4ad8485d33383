"""`meshspec deploy` converges a small mesh of real programs, idempotently, and prunes exactly.

The scenarios build on one mesh (its own state dir and port offset) in file order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.meshrun import BIN, REPO, Mesh
from tests.support import wait_until

pytestmark = pytest.mark.integration
OFFSET = 3000
SMALL = REPO / "tests" / "data" / "specs" / "small.yaml"
ALL = {"consul-local-0", "web-local-0", "web-local-1", "redis-local-0", "files-local-0"}
CHECKER = "mesh-checker"  # the host's checker, beside the instances


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    root = tmp_path_factory.mktemp("converge")
    spec = root / "spec.yaml"
    spec.write_text(SMALL.read_text())
    m = Mesh(root / "state", OFFSET, spec)
    yield m
    m.deploy("deploys/teardown.py")


def _pids(mesh: Mesh) -> dict[str, int | None]:
    """The instances' pids (the checker restarts by design whenever the instances change)."""
    return {name: pid for name, (_, pid) in mesh.supervisor_status().items() if name != CHECKER}


def test_an_invalid_spec_touches_no_host(mesh, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.read_text().replace("port: 18080", "port: web"))
    run = Mesh(mesh.state_dir, OFFSET, bad).deploy()
    assert run.code == 2
    assert "services.web.port: Input should be a valid integer" in run.output
    assert not mesh.state_dir.exists()


def test_dry_run_shows_changes_and_makes_none(mesh):
    run = mesh.deploy("deploys/mesh.py", "--dry")
    assert run.code == 0, run.output
    assert "Detected changes" in run.output
    assert not (mesh.state_dir / "supervisor").exists()


def test_deploy_runs_registers_and_passes_every_instance(mesh):
    run = mesh.deploy()
    assert run.code == 0, run.output
    assert "5 instances: 5 running, 5 registered, 5 passing" in run.output
    assert {name: state for name, (state, _) in mesh.supervisor_status().items()} == dict.fromkeys(ALL | {CHECKER}, "RUNNING")
    assert mesh.passing() == dict.fromkeys(ALL, "passing")
    for replica, port in ((0, 18080), (1, 18180)):
        assert httpx.get(f"http://127.0.0.1:{port + OFFSET}/index.html").text.strip() == f"web-local-{replica}"
    registered = mesh.consul().agent.services()["web-local-1"]
    assert (registered["Port"], registered["Meta"]["managed-by"], registered["Meta"]["kind"]) == (18180 + OFFSET, "meshspec", "core")


def test_second_run_changes_nothing(mesh):
    before = _pids(mesh)
    run = mesh.deploy()
    assert run.code == 0, run.output
    assert run.changed_operations() == []
    assert _pids(mesh) == before


def test_a_program_stopped_by_hand_is_started_again(mesh):
    conf = str(mesh.state_dir / "supervisor" / "supervisord.conf")
    subprocess.run([str(BIN / "supervisorctl"), "-c", conf, "stop", "web-local-1"], check=True, capture_output=True)
    assert mesh.supervisor_status()["web-local-1"][0] == "STOPPED"
    run = mesh.deploy()
    assert run.code == 0, run.output
    assert "Programs" in run.changed_operations()
    assert set(run.changed_operations()) <= {"Programs", "Health"}  # Health waits only if the restart was seen
    assert mesh.supervisor_status()["web-local-1"][0] == "RUNNING"


def test_removing_a_service_stops_and_deregisters_exactly_it(mesh):
    before = _pids(mesh)
    spec = mesh.spec()
    spec["services"] = [s for s in spec["services"] if s["name"] != "redis"]
    mesh.write_spec(spec)
    run = mesh.deploy()
    assert run.code == 0, run.output
    assert set(mesh.supervisor_status()) == ALL - {"redis-local-0"} | {CHECKER}
    assert "redis-local-0" not in mesh.consul().agent.services()
    with pytest.raises(ProcessLookupError):
        os.kill(before["redis-local-0"], 0)
    assert {k: v for k, v in _pids(mesh).items()} == {k: v for k, v in before.items() if k != "redis-local-0"}


def test_adding_a_replica_starts_and_registers_exactly_one(mesh):
    before = _pids(mesh)
    spec = mesh.spec()
    next(s for s in spec["services"] if s["name"] == "web")["replicas"] = 3
    mesh.write_spec(spec)
    run = mesh.deploy()
    assert run.code == 0, run.output
    after = _pids(mesh)
    assert set(after) - set(before) == {"web-local-2"}
    assert {k: after[k] for k in before} == before
    assert mesh.passing()["web-local-2"] == "passing"


def test_a_deploy_killed_midway_then_rerun_leaves_no_orphan(mesh):
    spec = mesh.spec()
    next(s for s in spec["services"] if s["name"] == "web")["replicas"] = 1
    mesh.write_spec(spec)
    proc = subprocess.Popen([str(BIN / "meshspec"), "deploy"], cwd=REPO, env=mesh.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    for line in proc.stdout:  # kill it as soon as it starts changing programs
        if "Starting operation: Programs" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    run = mesh.deploy()
    assert run.code == 0, run.output
    expected = {"consul-local-0", "web-local-0", "files-local-0"}
    assert set(mesh.supervisor_status()) == expected | {CHECKER}
    assert set(mesh.consul().agent.services()) == expected
    # No process of this mesh runs outside supervisord's programs. The checker restarts when its
    # checks change, and the deploy does not wait out its startsecs: wait for RUNNING (and a pid).
    wait_until(lambda: {state for state, _ in mesh.supervisor_status().values()} == {"RUNNING"}, 10)
    supervised = {pid for _, pid in mesh.supervisor_status().values()}
    ours = subprocess.run(["pgrep", "-f", str(mesh.state_dir)], capture_output=True, text=True).stdout.split()
    supervisord = int((mesh.state_dir / "supervisor" / "supervisord.pid").read_text())
    for pid in map(int, ours):
        ancestors = _ancestors(pid)
        assert pid == supervisord or supervised & ({pid} | ancestors), f"orphan {pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()}"


def _ancestors(pid: int) -> set[int]:
    found = set()
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, IndexError):
            break
        found.add(pid)
    return found


def test_a_registry_that_refuses_the_deploy_s_token_fails_it_in_one_line(mesh):
    """The agent keeps the management token it started with; a deploy that reads another from the
    token file is refused by it, and says so as one line, not as a Python traceback. The right token
    back, the next deploy puts everything right."""
    token_file = mesh.state_dir / "consul" / "management-token"
    kept = token_file.read_text()
    token_file.write_text("00000000-0000-4000-8000-000000000000\n")
    try:
        run = mesh.deploy()
    finally:
        token_file.write_text(kept)
    assert run.code != 0
    assert "Traceback" not in run.output and "Unexpected error" not in run.output, run.output
    assert "ACLPermissionDenied: ACL not found" in run.output, run.output
    run = mesh.deploy()
    assert run.code == 0, run.output
    assert set(mesh.passing().values()) == {"passing"}


def test_teardown_removes_everything_it_created(mesh):
    supervisord = int((mesh.state_dir / "supervisor" / "supervisord.pid").read_text())
    run = mesh.deploy("deploys/teardown.py")
    assert run.code == 0, run.output
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(supervisord, 0)
    assert not any((mesh.state_dir / part).exists() for part in ("install", "instances", "supervisor", "logs", "consul"))
    assert subprocess.run(["pgrep", "-f", str(mesh.state_dir)], capture_output=True).returncode == 1
