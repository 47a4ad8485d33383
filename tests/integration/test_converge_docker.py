"""MESH_RUNTIME=docker converges the small mesh to one container per instance on the real engine,
idempotently; a container stopped by hand comes back; switching runtime converges both ways;
teardown removes the containers. The scenarios build on one mesh, in file order.
"""

from __future__ import annotations

import shutil

import docker
import httpx
import pytest

from meshspec.converge import engine
from tests.integration.meshrun import REPO, Mesh
from tests.support import wait_until

pytestmark = pytest.mark.integration
OFFSET = 3500
SMALL = REPO / "tests" / "data" / "specs" / "small.yaml"
ALL = {"consul-local-0", "web-local-0", "web-local-1", "redis-local-0", "files-local-0"}

if not (engine.answering() or shutil.which("dockerd")):
    pytest.skip("the docker runtime needs Docker: apt-get install docker.io", allow_module_level=True)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    root = tmp_path_factory.mktemp("converge-docker")
    spec = root / "spec.yaml"
    spec.write_text(SMALL.read_text())
    m = Mesh(root / "state", OFFSET, spec, runtime="docker")
    yield m
    m.deploy("deploys/teardown.py")


def containers(mesh: Mesh) -> dict[str, docker.models.containers.Container]:
    """{instance id: container} of this mesh, by its state-dir label."""
    found = docker.from_env().containers.list(all=True, filters={"label": f"meshspec.state-dir={mesh.state_dir}"})
    return {c.labels["meshspec.instance"]: c for c in found}


CHECKER = {"mesh-checker"}  # the host's checker runs under supervisord in both runtimes


def supervised(mesh: Mesh) -> list[str]:
    """The programs supervisord runs for this mesh (none: it is not running)."""
    return [name for name, (state, _) in mesh.supervisor_status().items() if state == "RUNNING"]


def test_deploy_runs_each_instance_in_its_container(mesh):
    run = mesh.deploy(timeout=1800)  # a cold engine builds the base and the layers
    assert run.code == 0, run.output[-4000:]
    assert "5 instances: 5 running, 5 registered, 5 passing (docker)" in run.output
    found = containers(mesh)
    assert set(found) == ALL and {c.status for c in found.values()} == {"running"}
    assert mesh.passing() == dict.fromkeys(ALL, "passing")
    assert httpx.get(f"http://127.0.0.1:{18180 + OFFSET}/index.html").text.strip() == "web-local-1"
    assert mesh.consul().agent.services()["redis-local-0"]["Meta"]["runtime"] == "docker"
    assert set(supervised(mesh)) == CHECKER


def test_second_run_changes_nothing(mesh):
    before = {i: c.id for i, c in containers(mesh).items()}
    run = mesh.deploy()
    assert run.code == 0, run.output[-4000:]
    assert run.changed_operations() == []
    assert {i: c.id for i, c in containers(mesh).items()} == before


def test_a_container_stopped_by_hand_is_started_again(mesh):
    containers(mesh)["web-local-1"].stop()
    assert containers(mesh)["web-local-1"].status == "exited"
    run = mesh.deploy()
    assert run.code == 0, run.output[-4000:]
    assert run.changed_operations()[0] == "Containers"  # then Health, waiting for its check to pass again
    assert containers(mesh)["web-local-1"].status == "running"


def test_switching_to_processes_and_back_converges(mesh):
    to_process = Mesh(mesh.state_dir, OFFSET, mesh.spec_path).deploy()
    assert to_process.code == 0, to_process.output[-4000:]
    # The deploy waits for the instances (running for their check's TTL, and passing), not for the
    # host's checker, which supervisord may still be starting: wait for it rather than racing it.
    assert "5 registered, 5 passing (process)" in to_process.output, to_process.output[-2500:]
    wait_until(lambda: set(supervised(mesh)) == ALL | CHECKER, 10)
    assert containers(mesh) == {}
    assert mesh.consul().agent.services()["redis-local-0"]["Meta"]["runtime"] == "process"
    back = mesh.deploy()
    assert back.code == 0, back.output[-4000:]
    assert "5 instances: 5 running, 5 registered, 5 passing (docker)" in back.output
    assert set(supervised(mesh)) == CHECKER and set(containers(mesh)) == ALL


def test_removing_a_service_prunes_exactly_its_container(mesh):
    before = {i: c.id for i, c in containers(mesh).items()}
    spec = mesh.spec()
    spec["services"] = [s for s in spec["services"] if s["name"] != "redis"]
    mesh.write_spec(spec)
    run = mesh.deploy()
    assert run.code == 0, run.output[-4000:]
    assert "redis-local-0" not in mesh.consul().agent.services()
    assert {i: c.id for i, c in containers(mesh).items()} == {i: c for i, c in before.items() if i != "redis-local-0"}


def test_teardown_removes_the_containers(mesh):
    run = mesh.deploy("deploys/teardown.py")
    assert run.code == 0, run.output[-4000:]
    assert containers(mesh) == {}
    assert not (mesh.state_dir / "instances").exists()
