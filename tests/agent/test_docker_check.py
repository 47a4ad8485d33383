"""The agent's docker checks (Args exec'd in a container), against the real Docker engine on this machine."""

from __future__ import annotations

import io
import shutil
import tarfile
import uuid
from pathlib import Path

import docker
import pytest
from consul.exceptions import BadRequest

from meshspec.converge import engine as meshspec_engine

pytestmark = pytest.mark.integration

IMAGE = "meshspec-test/busybox:1"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: runs in an image holding nothing else
APPLETS = ("sh", "true", "false", "sleep")



@pytest.fixture(scope="module")
def engine():
    """The machine's engine, started the way the deploy starts it when it is installed but down."""
    if not meshspec_engine.answering():
        if not shutil.which("dockerd"):
            pytest.skip("docker checks need a Docker engine: apt-get install docker.io")
        meshspec_engine.start_engine()
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="module")
def image(engine, tmp_path_factory):
    """A busybox-only image imported from a local tar: no registry is reachable, so nothing is pulled."""
    if not BUSYBOX.exists() or b"ld-linux" in BUSYBOX.read_bytes()[:4096]:  # absent, or dynamically linked
        pytest.skip("needs a static /bin/busybox on the host: apt-get install busybox-static")
    tar_path = tmp_path_factory.mktemp("image") / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link, io.BytesIO())
    repository, tag = IMAGE.split(":")
    engine.api.import_image_from_file(str(tar_path), repository=repository, tag=tag)
    yield IMAGE
    engine.images.remove(IMAGE, force=True)


@pytest.fixture(scope="module")
def container(engine, image):
    """A long-running container on the host network, under docker-init, as the docker runtime starts them."""
    box = engine.containers.run(image, command=["sleep", "600"], name=f"meshspec-test-{uuid.uuid4().hex[:8]}",
                                network_mode="host", init=True, detach=True)
    yield box.name
    box.remove(force=True)


def docker_check(container_name: str, args: list[str]) -> dict:
    """Consul's docker check as a dict (py-consul's Check.docker only knows the deprecated Script)."""
    return {"DockerContainerID": container_name, "Args": args, "Interval": "1s", "Timeout": "5s"}


def register(client, name: str, check: dict) -> str:
    """A service with that one check, under a known check ID."""
    client.agent.service.register(name, service_id=name, check={"CheckID": f"service:{name}", **check})
    return f"service:{name}"


def wait_status(client, check_id: str, status: str, wait_until) -> dict:
    """The check once it reports `status` (checks run every second; wait_until allows 15s)."""
    return wait_until(lambda: (c := client.agent.checks()[check_id])["Status"] == status and c,
                      what=f"{check_id} {status}")


def test_exit_codes_map_to_consul_statuses(make_agent, container, wait_until):
    """0 -> passing, 1 -> warning, anything else -> critical, as with Consul."""
    c = make_agent(extra=["--enable-script-checks"]).client()
    ok = register(c, "ok", docker_check(container, ["true"]))
    meh = register(c, "meh", docker_check(container, ["false"]))
    # critical is also the initial status: the echo proves the check ran
    bad = register(c, "bad", docker_check(container, ["sh", "-c", "echo down; exit 2"]))
    wait_status(c, ok, "passing", wait_until)
    wait_status(c, meh, "warning", wait_until)
    check = wait_until(lambda: (ch := c.agent.checks()[bad])["Output"].strip() == "down" and ch, what="bad ran")
    assert check["Status"] == "critical"


def test_args_run_inside_the_container(make_agent, container, wait_until):
    """The command sees the image's filesystem (no /usr), not the host's; its output is the check's."""
    c = make_agent(extra=["--enable-script-checks"]).client()
    check_id = register(c, "echo", docker_check(container, ["sh", "-c", "test ! -e /usr && echo inside"]))
    assert wait_status(c, check_id, "passing", wait_until)["Output"].strip() == "inside"


def test_unknown_container_is_critical_with_a_message(make_agent, engine, wait_until):
    """A missing container must not look healthy; the output names it."""
    c = make_agent(extra=["--enable-script-checks"]).client()
    missing = f"meshspec-test-missing-{uuid.uuid4().hex[:8]}"
    check_id = register(c, "ghost", docker_check(missing, ["true"]))
    check = wait_until(lambda: (ch := c.agent.checks()[check_id])["Output"] and ch, what="ghost output")
    assert check["Status"] == "critical"
    assert missing in check["Output"]


def test_refused_without_script_checks(make_agent, container):
    """Docker checks run commands, so they need --enable-script-checks, like script checks (HTTP 400)."""
    c = make_agent().client()
    with pytest.raises(BadRequest, match="^400 .*Scripts are disabled"):
        register(c, "web", docker_check(container, ["true"]))
    assert c.agent.services() == {}
