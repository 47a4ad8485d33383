"""The docker runtime's image builds, through the Docker SDK: the base from mmdebstrap, then the
layers (a script run in a container of the parent, committed) and grafts, in parallel.

What to build comes from meshspec.render.images; this module only builds what the engine lacks.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import click
from docker.types import Mount
from pyinfra.api import OperationError

from meshspec.converge.engine import client, has_image
from meshspec.converge.source import source_files
from meshspec.render.images import APT_LISTS_MOUNT, SOURCE_MOUNT, BaseImage, Graft, Layer, Node

BUILD_TIMEOUT = 1800  # seconds: the largest install (torch) takes minutes on a busy machine


def build_base(base: BaseImage, tag: str | None = None) -> None:
    """mmdebstrap the base's root filesystem and import it as `tag` (default: the base's own tag)."""
    tag = tag or base.tag
    if has_image(tag):
        return
    with tempfile.TemporaryDirectory(prefix="meshspec-base-") as tmp:
        tarball = f"{tmp}/base.tar"
        done = subprocess.run(base.mmdebstrap(tarball), capture_output=True, text=True)
        if done.returncode != 0:
            raise OperationError(f"mmdebstrap failed ({done.returncode}):\n{done.stderr[-3000:]}")
        repository, version = tag.split(":")
        client(timeout=BUILD_TIMEOUT).api.import_image_from_file(tarball, repository=repository, tag=version)


def build_images(base: BaseImage, layers: list[tuple[Layer | Graft, Path | None]], workers: int = 3) -> None:
    """Build the base, then every layer and graft whose parents exist, `workers` at a time: installs
    wait on the network as much as on the CPU. Layers that run apt take turns (one apt cache)."""
    if not has_image(base.tag):
        _say(f"building {base.tag} (mmdebstrap)")
        build_base(base)
    pending = [(layer, source) for layer, source in layers if not has_image(layer.tag)]
    running: dict[Future, Layer | Graft] = {}
    apt = threading.Lock()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="meshspec-build") as pool:
        while pending or running:
            waiting = {layer.tag for layer, _ in pending} | {layer.tag for layer in running.values()}
            for layer, source in [(l, s) for l, s in pending if not _needs(l) & waiting]:
                pending.remove((layer, source))
                running[pool.submit(_build_one, layer, source, apt)] = layer
            if not running:
                raise OperationError(f"cannot build {', '.join(l.tag for l, _ in pending)}: a parent image is missing")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                future.result()  # a failed build stops the deploy with its log


def _needs(image: Layer | Graft) -> set[str]:
    return {image.parent, image.source} if isinstance(image, Graft) else {image.parent}


def _build_one(image: Layer | Graft, source: Path | None, apt: threading.Lock) -> None:
    started = time.monotonic()
    if isinstance(image, Graft):
        build_graft(image)
    elif "apt-get" in image.script:
        with apt:
            build_layer(image, source)
    else:
        build_layer(image, source)
    _say(f"built {image.tag} in {time.monotonic() - started:.0f}s")


def _say(line: str) -> None:
    click.echo(f"    {line}")


def build_layer(layer: Layer, source: Path | None = None) -> None:
    """Run the layer's script in a container of its parent (host network, the host's package
    caches and configuration mounted) and commit the result as the layer's tag."""
    if has_image(layer.tag):
        return
    engine = client(timeout=BUILD_TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="meshspec-source-") as staged:
        mounts = build_mounts()
        if source:
            mounts[_stage_source(source, Path(staged))] = {"bind": SOURCE_MOUNT, "mode": "ro"}
        # Mounts, not volumes: the SDK declares `volumes` in the container's config too, and a
        # commit would keep them as the image's VOLUMEs.
        binds = [Mount(m["bind"], host_path, type="bind", read_only=m["mode"] == "ro") for host_path, m in mounts.items()]
        started = time.monotonic()
        container = engine.containers.run(layer.parent, ["sh", "-c", layer.script], detach=True,
                                          network_mode="host", mounts=binds, environment=build_environment())
        try:
            status = container.wait()["StatusCode"]
            if status != 0:
                tail = container.logs(tail=40).decode("utf-8", "replace")
                raise OperationError(f"building {layer.tag} failed (exit {status}):\n{tail}")
            repository, tag = layer.tag.split(":")
            container.commit(repository=repository, tag=tag, changes=['CMD ["/bin/bash"]'],
                             message=f"meshspec layer, built in {time.monotonic() - started:.0f}s")
        finally:
            container.remove(force=True)


def build_graft(graft: Graft) -> None:
    """Copy graft.path out of graft.source into a container of graft.parent, and commit."""
    if has_image(graft.tag):
        return
    engine = client(timeout=BUILD_TIMEOUT)
    source = engine.containers.create(graft.source, ["true"])
    target = engine.containers.create(graft.parent, ["true"])
    try:
        stream, _ = source.get_archive(graft.path)
        target.put_archive("/", _directories(os.path.dirname(graft.path)))  # the engine extracts only into a directory that exists
        target.put_archive(os.path.dirname(graft.path), b"".join(stream))
        repository, tag = graft.tag.split(":")
        target.commit(repository=repository, tag=tag, changes=['CMD ["/bin/bash"]'], message=f"meshspec graft of {graft.path}")
    finally:
        source.remove(force=True)
        target.remove(force=True)


def _directories(path: str) -> bytes:
    """A tar of `path`'s directories (0755, root's), each ancestor first."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        parts = [p for p in path.strip("/").split("/") if p]
        for depth in range(1, len(parts) + 1):
            entry = tarfile.TarInfo("/".join(parts[:depth]))
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(entry)
    return data.getvalue()


def host_node() -> Node | None:
    """This host's Node.js, which the base image carries (None: no node, no npm installs)."""
    found = shutil.which("node")
    if not found:
        return None
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return Node(os.path.realpath(found), version)


def _stage_source(root: Path, into: Path) -> str:
    for path in source_files(root):
        target = into / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return str(into)


# Where installs find their packages and settings on this host; builds see them read-only, so a
# layer installs exactly as the process runtime's install does (same indexes, constraints, wheels).
_CONFIGS = ("/etc/pip.conf", "/etc/xdg/pip", str(Path.home() / ".config/pip"), str(Path.home() / ".npmrc"), "/etc/npmrc",
            "/usr/etc/npmrc")  # npm's global config where node's prefix is /usr, as in the base image
# The settings builds inherit: the package managers' own, and which CA bundle to trust (the
# host's, when a TLS-inspecting proxy stands between this machine and the registries).
_INHERITED = ("PIP_", "NPM_CONFIG_", "npm_config_", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
_SYSTEM = {"usr", "bin", "sbin", "lib", "lib64", "etc", "var", "proc", "sys", "dev", "run", "tmp"}
_PATH = re.compile(r"(?:file://)?(/[^\s'\",]+)")


def build_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_INHERITED)}


def _paths_named(text: str) -> set[str]:
    """Existing paths in a setting; a local index (`<root>/simple`) links to files beside it: mount <root>."""
    found = {Path(m.group(1).rstrip("/")) for m in _PATH.finditer(text) if os.path.exists(m.group(1))}
    named = {p.parent if p.name == "simple" else p for p in found}
    # a file named is the host's own (its CA bundle, which a TLS-inspecting proxy needs); the image has
    # its own system tree, never covered by a host directory (npm's `nodedir=/usr` names /usr)
    return {str(p) for p in named if p.is_file() or (len(p.parts) > 2 and p.parts[1] not in _SYSTEM)}


def build_mounts() -> dict[str, dict]:
    caches = {"/var/cache/apt/archives": "/var/cache/apt/archives", str(Path.home() / ".cache/pip"): "/root/.cache/pip",
              str(Path.home() / ".npm"): "/root/.npm"}
    for path in caches:
        os.makedirs(path, exist_ok=True)
    mounts = {host: {"bind": inside, "mode": "rw"} for host, inside in caches.items()}
    mounts["/var/lib/apt/lists"] = {"bind": APT_LISTS_MOUNT, "mode": "ro"}
    configs = [c for c in _CONFIGS if os.path.exists(c)]
    named = set(configs)
    for config in configs:
        files = [config] if os.path.isfile(config) else [str(p) for p in Path(config).rglob("*") if p.is_file()]
        for f in files:
            named |= _paths_named(Path(f).read_text(errors="replace"))
    for value in build_environment().values():
        named |= _paths_named(value)
    mounts |= {path: {"bind": path, "mode": "ro"} for path in sorted(named) if path not in mounts}
    return mounts


