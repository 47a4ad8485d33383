"""Instance directories and their `prepare` commands, redone only when they change."""

from __future__ import annotations

import shlex
from hashlib import sha256
from io import StringIO
from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand, operation

from meshspec.converge import engine
from meshspec.converge.facts.files import FileDigests
from meshspec.converge.facts.snapshot import current
from meshspec.converge.facts.stamps import Stamps
from meshspec.converge.facts.system import UserNames
from meshspec.render.containers import ContainerSpec
from meshspec.render.preparation import STAMP, USERADD, Preparation


@operation()
def prepared(root: str, preparations: list[Preparation], containers: dict[str, ContainerSpec] | None = None):
    """
    Create each instance's directory (owned by its user) and run its prepare commands once.

    + root: the directory holding one directory per instance
    + preparations: this host's instances
    + containers: (docker runtime) {instance id: its container}: prepare in a throwaway container
      of its image, with its volumes, so users and tools are the image's
    """
    done = current(Stamps, root=root, stamp=STAMP)
    stale = [p for p in preparations if done.get(p.instance_id) != p.hash]
    if not stale:
        host.noop(f"{len(preparations)} instance directories are prepared")
        return
    for p in stale:
        if containers:
            spec = containers[p.instance_id]
            yield FunctionCommand(engine.run_once, (spec.image, p.script(), spec.volumes), {})
        else:
            yield StringCommand("sh", "-c", shlex.quote(p.script()))


@operation()
def users(names: list[str]):
    """
    Make the system users the spec names that the host does not have yet (no login, no home).
    A user that exists is left as it is: a package's own (postgres) keeps its home and shell.

    + names: the users this host's programs run as or need
    """
    existing = set(current(UserNames))
    missing = [n for n in names if n not in existing]
    if not missing:
        host.noop(f"{len(names)} system users exist")
        return
    for name in missing:
        yield StringCommand(*USERADD, shlex.quote(name))


@operation()
def files(wanted: list[tuple[str, str]]):
    """
    Write the configuration files rendered from the plan (mode 0644), those that differ.

    + wanted: (path, content) of this host's rendered files
    """
    digests = current(FileDigests, paths=[path for path, _ in wanted]) if wanted else {}
    stale = [(path, text) for path, text in wanted if digests.get(path) != sha256(text.encode()).hexdigest()]
    if not stale:
        host.noop(f"{len(wanted)} rendered files are as planned")
        return
    parents = sorted({str(PurePosixPath(path).parent) for path, _ in stale})
    yield StringCommand("mkdir", "-p", "-m", "755", *map(shlex.quote, parents))
    for path, text in stale:
        yield FileUploadCommand(StringIO(text), path)
        yield StringCommand("chmod", "644", shlex.quote(path))
