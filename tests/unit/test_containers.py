"""meshspec.render.containers: plan -> one container per instance for the docker runtime (pure)."""

from pathlib import Path

import pytest

from meshspec.converge.mesh import load_mesh
from meshspec.plan import Runtime, make_plan
from meshspec.plan.hosts import Host
from meshspec.render import images
from meshspec.render.containers import DOCKER_SOCKET, container_name, container_spec
from meshspec.render.probes import probe
from meshspec.spec import parse_spec

SMALL = Path(__file__).resolve().parents[1] / "data" / "specs" / "small.yaml"
LOCAL = Host("@local", "127.0.0.1")


def docker_plan(state_dir="/srv/mesh", text=None):
    """The plan as load_mesh builds it for runtime "docker" (meshspec and installs inside the images)."""
    if text is None:
        return load_mesh(str(SMALL), [LOCAL], 0, state_dir, None, runtime="docker").plan
    return make_plan(parse_spec(text), [LOCAL], 0, state_dir, meshspec_bin=images.MESHSPEC_BIN,
                     install_root=str(images.INSTALL_ROOT))


@pytest.fixture(scope="module")
def plan():
    return docker_plan()


def spec_of(plan, service, image="img:1"):
    inst = plan.instances_of(service)[0]
    return inst, container_spec(plan, inst, image)


def test_runs_on_the_host_network_under_init_and_restarts(plan):
    """Same addresses and ports as the plan; docker-init as PID 1; survives engine restarts."""
    _, spec = spec_of(plan, "web")
    kwargs = spec.run_kwargs()
    assert (kwargs["network_mode"], kwargs["init"], kwargs["restart_policy"]) == ("host", True, {"Name": "unless-stopped"})
    assert (kwargs["image"], kwargs["name"]) == ("img:1", spec.name)


def test_labels_say_whose_container_it_is(plan):
    """Teardown and prune select containers by these labels."""
    inst, spec = spec_of(plan, "web")
    assert spec.labels["meshspec.managed-by"] == "meshspec"
    assert spec.labels["meshspec.mesh"] == "small"
    assert spec.labels["meshspec.state-dir"] == "/srv/mesh"
    assert spec.labels["meshspec.instance"] == inst.id
    assert spec.labels["meshspec.spec-hash"] == spec.spec_hash


def test_state_and_token_are_mounted_at_the_same_paths(plan):
    """The instance dir rw at its host path, its service's token file ro and no other token, no
    engine socket for a plain service."""
    inst, spec = spec_of(plan, "web")
    instance_dir = str(plan.layout.instance_dir(inst.id))
    assert spec.volumes[instance_dir] == "rw"
    assert spec.volumes[str(plan.layout.service_token_file("web"))] == "ro"
    assert not [v for v in spec.volumes if "consul" in v and v != str(plan.layout.service_token_file("web"))]
    assert DOCKER_SOCKET not in spec.volumes
    assert spec.run_kwargs()["volumes"][instance_dir] == {"bind": instance_dir, "mode": "rw"}
    assert spec.working_dir == instance_dir


def test_only_the_registry_gets_the_docker_socket_and_the_management_token(plan):
    """The agent runs docker checks through the engine, and starts with the management token; nobody
    else needs either."""
    with_socket = {inst.service for inst in plan.instances if DOCKER_SOCKET in container_spec(plan, inst, "i").volumes}
    assert with_socket == {"consul"}
    management = str(plan.layout.consul_token_file)
    assert {i.service for i in plan.instances if management in container_spec(plan, i, "i").volumes} == {"consul"}


def test_commands_point_into_the_image(plan):
    """{meshspec} and {install_dir} render to /opt/meshspec paths, not the host's venv or state dir."""
    _, consul = spec_of(plan, "consul")
    _, files = spec_of(plan, "files")
    assert consul.command[:2] == ["/opt/meshspec/venv/bin/meshspec", "agent"]
    assert files.command[0] == "/opt/meshspec/install/files/venv/bin/mcp-proxy"
    assert "/opt/meshspec/install/files/node_modules/.bin/mcp-server-filesystem" in files.command


def test_spec_hash_is_stable_and_follows_the_image(plan):
    """A deploy replaces a container only when what it would run changed."""
    assert spec_of(plan, "redis")[1].spec_hash == spec_of(plan, "redis")[1].spec_hash
    assert spec_of(plan, "redis", "img:1")[1].spec_hash != spec_of(plan, "redis", "img:2")[1].spec_hash


def test_two_state_dirs_never_share_a_container_name():
    """Two meshes of the same spec on one engine must not collide."""
    a, b = docker_plan("/srv/a"), docker_plan("/srv/b")
    assert container_name(a, a.instances_of("web")[0]) != container_name(b, b.instances_of("web")[0])


def test_command_probe_runs_in_the_container_only_with_docker(plan):
    """A command probe runs where the instance runs: in its container with the docker runtime."""
    text = SMALL.read_text().replace("health: {redis: {}}", 'health: {command: [redis-cli, -p, "{port}", ping]}')
    plan = docker_plan(text=text)
    inst = plan.instances_of("redis")[0]
    assert probe(plan, inst, Runtime.DOCKER).container == container_name(plan, inst)
    assert probe(plan, inst, Runtime.PROCESS).container is None


def test_container_only_service_gets_a_container():
    """A service with only `container.image` (no process) is valid for the docker runtime."""
    text = SMALL.read_text() + """
  - name: cache
    kind: core
    description: a registry image only
    port: 18400
    container: {image: "redis:7", command: [redis-server, --port, "{port}"]}
    health: {tcp: {}}
"""
    plan = docker_plan(text=text)
    inst, spec = spec_of(plan, "cache", "redis:7")
    assert (spec.image, spec.command) == ("redis:7", ["redis-server", "--port", "18400"])
    assert spec.volumes[str(plan.layout.instance_dir(inst.id))] == "rw"
