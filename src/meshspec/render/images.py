"""The docker runtime's images, as recipes: pure.

No registry is reachable, so every image is built on the host. Each is tagged with the hash of
its recipe and its parents' tags, so a deploy builds only the images whose tag the engine does
not hold yet: a changed pin rebuilds that service's layer and nothing else, and a new meshspec
rebuilds only meshspec's layer and the cheap grafts of it.

    meshspec/base:<hash>        Debian from mmdebstrap + `docker import`: Python, a toolchain for
                                native wheels and addons, and the host's Node.js (the one the
                                process runtime uses, so both runtimes run the same Node)
    meshspec/meshspec:<hash>    base + meshspec in /opt/meshspec/venv (agent, controller, probes, serve)
    meshspec/<service>:<hash>   base + the service's Debian packages and its pinned pip/npm install,
                                and, when its commands run meshspec, meshspec's venv grafted on top

A service with `container.image` uses that image instead (from the user's registry).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from meshspec.common.digest import digest
from meshspec.render.installs import Recipe
from meshspec.render.preparation import USERADD, users_of
from meshspec.spec.models import Service

OPT = PurePosixPath("/opt/meshspec")
MESHSPEC_BIN = str(OPT / "venv" / "bin" / "meshspec")
INSTALL_ROOT = OPT / "install"
SOURCE_MOUNT = "/meshspec-build/source"  # meshspec's source tree, read-only, while its layer builds
APT_LISTS_MOUNT = "/meshspec-build/apt-lists"  # the host's apt lists, read-only: no `apt-get update` per layer

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# What every layer's install may need: venvs, and compilers for wheels or npm addons without a
# prebuilt binary here (no GitHub downloads). procps gives `ps` to whoever debugs a container.
BASE_PACKAGES = ("python3", "python3-venv", "python3-dev", "build-essential", "git", "ca-certificates", "procps")


@dataclass(frozen=True)
class Node:
    """The host's Node.js, copied into the base image: its binary, its global modules, its headers."""

    binary: str  # e.g. /usr/bin/node
    version: str  # `node --version`

    @property
    def prefix(self) -> PurePosixPath:
        return PurePosixPath(self.binary).parent.parent


@dataclass(frozen=True)
class BaseImage:
    packages: tuple[str, ...] = BASE_PACKAGES
    node: Node | None = None

    @property
    def tag(self) -> str:
        return f"meshspec/base:{digest((SUITE, MIRRORS, self.packages, self.node))}"

    def mmdebstrap(self, tarball: str) -> list[str]:
        """The command that writes the base's root filesystem to `tarball`."""
        argv = ["mmdebstrap", "--variant=minbase", "--quiet", f"--include={','.join(self.packages)}"]
        if self.node:  # into /usr, wherever the host keeps it (npm's links and ~/.npmrc's nodedir expect /usr)
            prefix = self.node.prefix
            argv += [
                '--customize-hook=mkdir -p "$1/usr/lib/node_modules" "$1/usr/include/node"',
                f"--customize-hook=copy-in {self.node.binary} /usr/bin",
                f"--customize-hook=sync-in {prefix}/lib/node_modules /usr/lib/node_modules",
                f"--customize-hook=sync-in {prefix}/include/node /usr/include/node",
                '--customize-hook=chroot "$1" sh -c "ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/bin/npm'
                ' && ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/bin/npx"',
            ]
        return [*argv, SUITE, tarball, *MIRRORS]


@dataclass(frozen=True)
class Layer:
    """An image made by running `script` once in a container of `parent` and committing the result."""

    repository: str
    parent: str
    script: str
    inputs: str = ""  # what else the result depends on (meshspec's source digest)

    @property
    def tag(self) -> str:
        return f"{self.repository}:{digest((self.parent, self.script, self.inputs))}"


def meshspec_layer(base: BaseImage, source_digest: str) -> Layer:
    venv = OPT / "venv"
    script = "\n".join([
        "set -e",
        # pip builds in the source tree: build from a copy, the mount is read-only
        f"cp -r {SOURCE_MOUNT} /tmp/meshspec-source",
        f"python3 -m venv {venv}",
        f"{venv}/bin/pip install --quiet /tmp/meshspec-source",
        "rm -rf /tmp/meshspec-source",
    ])
    return Layer("meshspec/meshspec", base.tag, script, source_digest)


def _apt_script(packages: list[str]) -> list[str]:
    names = shlex.join(packages)
    install = f"apt-get install -y -qq --no-install-recommends {names} >/dev/null"
    return [
        "export DEBIAN_FRONTEND=noninteractive",
        # no init scripts: the packages' daemons run as the container's command, nothing else
        "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d",
        f"if [ -d {APT_LISTS_MOUNT} ]; then cp -a {APT_LISTS_MOUNT}/. /var/lib/apt/lists/; fi",
        f"{install} || {{ apt-get update -qq && {install}; }}",
        "rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d",
    ]


@dataclass(frozen=True)
class Graft:
    """An image made by copying `path` from `source` onto `parent` (no install runs again)."""

    repository: str
    parent: str
    source: str
    path: str

    @property
    def tag(self) -> str:
        return f"{self.repository}:{digest((self.parent, self.source, self.path))}"


Image = Layer | Graft


def runs_meshspec(service: Service) -> bool:
    """Whether the service's commands name meshspec (its own servers, agent, controller, probes)."""
    process = service.process
    if process is None:
        return False
    texts = [*process.command, *process.env.values(), *(a for argv, _ in process.prepare_argvs() for a in argv),
             *(service.health.command or [])]
    return any("{meshspec}" in t for t in texts)


def service_images(base: BaseImage, meshspec: Layer, service: Service, recipe: Recipe | None) -> list[Image]:
    """What the service's image is built from, parents first; [] when base or meshspec's image runs it."""
    apt = list(service.process.install.apt) if service.process else []
    built: list[Image] = []
    if apt or recipe:
        steps = ["set -e", *(_apt_script(apt) if apt else []), *([recipe.script()] if recipe else [])]
        built.append(Layer(f"meshspec/{service.name}", base.tag, "\n".join(steps)))
        if runs_meshspec(service):
            built.append(Graft(f"meshspec/{service.name}", built[-1].tag, meshspec.tag, str(OPT / "venv")))
    users = users_of(service.process) if service.process else []
    if users:  # a layer of its own: the heavy install above does not rebuild for a user
        parent = built[-1].tag if built else (meshspec.tag if runs_meshspec(service) else base.tag)
        made = [f"id -u {shlex.quote(u)} >/dev/null 2>&1 || {shlex.join([*USERADD, u])}" for u in users]
        built.append(Layer(f"meshspec/{service.name}", parent, "\n".join(["set -e", *made])))
    return built


def image_for(base: BaseImage, meshspec: Layer, service: Service, built: list[Image]) -> str:
    """The tag a service's containers run."""
    if service.container and service.container.image:
        return service.container.image
    if built:
        return built[-1].tag
    return meshspec.tag if runs_meshspec(service) else base.tag


def install_dir(service: str) -> str:
    return str(INSTALL_ROOT / service)
