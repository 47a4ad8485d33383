"""Packages: Debian's, installed without starting their services, and isolated per-service installs."""

from __future__ import annotations

import io
import posixpath
import shlex
import time
import uuid

import click
import gevent
from gevent.pool import Pool
from pyinfra import host
from pyinfra.api import FunctionCommand, StringCommand, operation

from meshspec.converge.facts.shared import SharedFact
from meshspec.converge.facts.snapshot import current
from meshspec.converge.facts.system import InstalledPackages
from meshspec.converge.source import source_archive
from meshspec.render import installs
from meshspec.render.installs import Recipe

PROGRESS_EVERY = 15.0  # seconds between two "installs: ... running ..." lines

# While installing, a policy-rc.d that refuses service starts keeps Debian from starting its
# own postgresql, redis, ... on their default ports: the mesh starts its own instances.
_QUIET_APT = """set -e
policy=/usr/sbin/policy-rc.d
if [ ! -e $policy ]; then printf '#!/bin/sh\\nexit 101\\n' > $policy; chmod 755 $policy; trap 'rm -f $policy' EXIT; fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {packages} >/dev/null
"""


@operation()
def debian(packages: list[str]):
    """
    Install Debian packages without starting the services they carry.

    + packages: package names, optionally `name=version`

    Example: ``packages.debian(name="Debian packages", packages=["haproxy", "redis-server"])``
    """
    installed = set(current(InstalledPackages))
    missing = sorted({p for p in packages if p.split("=", 1)[0] not in installed})
    if not missing:
        host.noop(f"{len(set(packages))} Debian packages are installed")
        return
    yield StringCommand("sh", "-c", shlex.quote(_QUIET_APT.format(packages=shlex.join(missing))))


@operation()
def isolated(stamps: SharedFact, recipes: list[Recipe], jobs: int = 3):
    """
    Give each service its own venv / npm prefix at its pinned versions, in the host's install cache
    (one directory per recipe, shared by the host's meshes), `jobs` installs at a time, printing
    when each starts and ends and, every 15 s, what still runs.

    + stamps: the install stamps of the host's install cache ({directory name: recipe hash}), read once per run
    + recipes: the services' installs
    + jobs: installs run at once (they wait on downloads as much as on the CPU)

    Example: ``packages.isolated(name="Installs", stamps=stamps, recipes=mesh.recipes)``
    """
    stale = [r for r in recipes if stamps.get().get(r.name) != r.hash]
    if not stale:
        host.noop(f"{len(recipes)} installs are as pinned")
        return
    yield FunctionCommand(_install, (stale, jobs), {})


def _upload_source(host, r: Recipe) -> str:
    """Put meshspec's source archive on `host` beside the install; where it is."""
    archive = r.source_upload(uuid.uuid4().hex[:12])
    host.run_shell_command(StringCommand("mkdir", "-p", shlex.quote(posixpath.dirname(archive))))
    if not host.put_file(io.BytesIO(source_archive()), archive):
        raise OSError(f"could not upload meshspec's source to {archive}")
    return archive


def _install(state, host, recipes: list[Recipe], jobs: int, every: float = PROGRESS_EVERY) -> bool:
    """Run the recipes' host scripts on `host` from a pool of `jobs` greenlets, in the order given,
    while another greenlet prints progress. A failure starts no further install (those running
    finish) and fails the operation. pyinfra calls this with `state` and `host` (its argument names)."""
    prefix = f"[{host.name}] " if len(state.inventory) > 1 else ""
    began, running, done, failed = time.monotonic(), {}, [], []

    def say(line: str) -> None:
        click.echo(f"    {prefix}{line}")

    def one(r: Recipe) -> None:
        if failed:
            return
        running[r.service] = time.monotonic()
        say(installs.started_line(r.service))
        try:
            archive = _upload_source(host, r) if r.source_digest else ""
            ok, output = host.run_shell_command(StringCommand("sh", "-c", shlex.quote(r.host_script(archive))))
            lines = output.output_lines
        except Exception as err:  # a lost connection fails this install, not the others' reports
            ok, lines = False, [f"{type(err).__name__}: {err}"]
        seconds = time.monotonic() - running.pop(r.service)
        if ok:
            done.append(r.service)
            built_meanwhile, kib = installs.installed(lines)
            say(installs.done_line(r.service, seconds, kib, built_meanwhile))
        else:
            failed.append(r.service)
            say(installs.failed_line(r.service, seconds, r.log))
            for line in lines:
                say(f"  {line}")

    def report() -> None:
        while True:
            gevent.sleep(every)
            if running:
                now = time.monotonic()
                say(installs.progress_line(len(done), len(recipes), {s: now - t for s, t in running.items()}, len(failed)))

    ticker = gevent.spawn(report)
    try:
        pool = Pool(jobs)
        for r in recipes:
            pool.spawn(one, r)
        pool.join()
    finally:
        ticker.kill()
    not_started = len(recipes) - len(done) - len(failed)
    say(installs.summary_line(len(done), len(recipes), time.monotonic() - began, tuple(failed), not_started))
    return not failed
