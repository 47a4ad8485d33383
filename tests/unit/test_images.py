"""meshspec.render.images: image recipes and their tags (pure)."""

from pathlib import Path

import pytest

from meshspec.render import images
from meshspec.render.images import BaseImage, Graft, Layer, Node
from meshspec.render.installs import recipe
from meshspec.spec import load_spec

SMALL = Path(__file__).resolve().parents[1] / "data" / "specs" / "small.yaml"
NODE = Node("/usr/local/bin/node", "v20.11.0")
BASE = BaseImage()
MESHSPEC = Layer("meshspec/meshspec", BASE.tag, "true", "src-1")


@pytest.fixture(scope="module")
def services():
    return {s.name: s for s in load_spec(SMALL).services}


def built_for(service, meshspec=MESHSPEC):
    """What the service's image is built from, as the deploy builds it."""
    install = recipe(service.name, images.install_dir(service.name), service.process.install)
    return images.service_images(BASE, meshspec, service, install), install


def layer_of(service):
    built, install = built_for(service)
    return (built[0] if built else None), install


def test_base_tag_is_stable_and_follows_packages_and_node():
    """A tag is the recipe's identity: same recipe, same tag; any change rebuilds."""
    assert BaseImage().tag == BaseImage().tag
    assert BaseImage().tag.startswith("meshspec/base:")
    tags = {BaseImage().tag, BaseImage(packages=("python3",)).tag, BaseImage(node=NODE).tag,
            BaseImage(node=Node(NODE.binary, "v22.0.0")).tag}
    assert len(tags) == 4


def test_mmdebstrap_argv_without_node():
    """Without a host Node, the base is a minbase bootstrap with no node copy-in."""
    argv = BaseImage().mmdebstrap("/tmp/base.tar")
    assert argv[0] == "mmdebstrap" and "--variant=minbase" in argv
    assert images.SUITE in argv and "/tmp/base.tar" in argv
    assert not any("node" in a for a in argv)


def test_mmdebstrap_copies_the_hosts_node_when_given():
    """The host's node binary and its modules go into /usr of the base."""
    argv = BaseImage(node=NODE).mmdebstrap("/tmp/base.tar")
    assert "--customize-hook=copy-in /usr/local/bin/node /usr/bin" in argv
    assert "--customize-hook=sync-in /usr/local/lib/node_modules /usr/lib/node_modules" in argv
    assert argv.index("--variant=minbase") < argv.index(images.SUITE) < argv.index("/tmp/base.tar")


def test_layer_tag_follows_parent_script_and_inputs():
    """Equal recipes share a tag; parent, script or inputs each change it."""
    layer = Layer("meshspec/x", "parent:1", "echo hi", "src-1")
    assert layer.tag == Layer("meshspec/x", "parent:1", "echo hi", "src-1").tag
    assert layer.tag.startswith("meshspec/x:")
    changed = [Layer("meshspec/x", "parent:2", "echo hi", "src-1"), Layer("meshspec/x", "parent:1", "echo ho", "src-1"),
               Layer("meshspec/x", "parent:1", "echo hi", "src-2")]
    assert all(other.tag != layer.tag for other in changed)


def test_no_layer_for_a_service_without_installs(services):
    """`web` (python3 -m http.server) runs on the base image itself."""
    layer, install = layer_of(services["web"])
    assert install is None and layer is None
    assert images.image_for(BASE, MESHSPEC, services["web"], []) == BASE.tag
    assert images.image_for(BASE, MESHSPEC, services["consul"], []) == MESHSPEC.tag  # the agent is meshspec


def test_a_new_meshspec_rebuilds_no_install(services):
    """An install layer sits on the base: only the graft of meshspec's venv follows meshspec."""
    plain, _ = built_for(services["redis"], Layer("meshspec/meshspec", BASE.tag, "true", "src-2"))
    assert [i.tag for i in plain] == [i.tag for i in built_for(services["redis"])[0]]
    spec = services["files"].model_copy(update={"process": services["files"].process.model_copy(
        update={"command": ["{meshspec}", "serve", "x"]})})
    old, _ = built_for(spec)
    new, _ = built_for(spec, Layer("meshspec/meshspec", BASE.tag, "true", "src-2"))
    assert old[0].tag == new[0].tag and isinstance(new[1], Graft) and old[1].tag != new[1].tag
    assert new[1].path == "/opt/meshspec/venv" and new[1].parent == new[0].tag


def test_apt_layer_installs_with_an_update_fallback(services):
    """Host apt lists may be stale: the install retries after `apt-get update`."""
    layer, _ = layer_of(services["redis"])
    assert (layer.repository, layer.parent) == ("meshspec/redis", BASE.tag)
    assert "apt-get install -y -qq --no-install-recommends redis-server" in layer.script
    assert "|| { apt-get update" in layer.script


def test_pip_npm_layer_runs_the_recipe_in_the_image_install_dir(services):
    """The recipe installs under /opt/meshspec/install/<service>, where the plan's {install_dir} points."""
    layer, install = layer_of(services["files"])
    assert images.install_dir("files") == "/opt/meshspec/install/files"
    assert install.install_dir == "/opt/meshspec/install/files"
    assert install.script() in layer.script
    assert "apt-get" not in layer.script
    assert layer.tag.startswith("meshspec/files:")


def test_the_users_a_service_needs_are_a_layer_of_their_own(services):
    """A user goes on top, so adding one never rebuilds an install; one that a package already made
    (postgres) is left as it is; a meshspec program's users sit on meshspec's image."""
    def with_users(service, user=None, system_users=()):
        process = service.process.model_copy(update={"user": user, "system_users": list(system_users)})
        return service.model_copy(update={"process": process})

    plain, _ = built_for(services["redis"])
    with_user, _ = built_for(with_users(services["redis"], user="redis"))
    assert [i.tag for i in with_user[:-1]] == [i.tag for i in plain]  # the install layer is untouched
    top = with_user[-1]
    assert top.parent == plain[-1].tag and top.script.splitlines()[1] == (
        "id -u redis >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent "
        "--shell /usr/sbin/nologin redis")
    agent, _ = built_for(with_users(services["consul"], system_users=["meshspec-tasks"]))
    assert len(agent) == 1 and agent[0].parent == MESHSPEC.tag and "meshspec-tasks" in agent[0].script
    assert images.image_for(BASE, MESHSPEC, services["consul"], agent) == agent[0].tag
