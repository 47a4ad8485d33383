"""Packages: Debian's, installed without starting their services, and isolated per-service installs."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.facts.deb import DebPackages

from meshspec.converge.facts.shared import SharedFact
from meshspec.render.installs import Recipe, parallel_script

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
    installed = host.get_fact(DebPackages)
    missing = sorted({p for p in packages if p.split("=", 1)[0] not in installed})
    if not missing:
        host.noop(f"{len(set(packages))} Debian packages are installed")
        return
    yield StringCommand("sh", "-c", shlex.quote(_QUIET_APT.format(packages=shlex.join(missing))))


@operation()
def isolated(stamps: SharedFact, recipes: list[Recipe], jobs: int = 3):
    """
    Give each service its own venv / npm prefix at its pinned versions (reinstalled when the pins
    change), `jobs` installs at a time.

    + stamps: the install stamps of this host ({service: recipe hash}), read once per run
    + recipes: the services' installs
    + jobs: installs run at once
    """
    stale = [r for r in recipes if stamps.get().get(r.service) != r.hash]
    if not stale:
        host.noop(f"{len(recipes)} installs are as pinned")
        return
    yield StringCommand("sh", "-c", shlex.quote(parallel_script(stale, jobs)))


@operation()
def prune_isolated(root: str, stamps: SharedFact, keep: list[str]):
    """
    Remove the installs (marked by their stamp) of services the spec no longer names.

    + root: the directory holding one install directory per service
    + stamps: the install stamps of this host, read once per run
    + keep: the services whose installs stay
    """
    gone = sorted(set(stamps.get()) - set(keep))
    if not gone:
        host.noop("no install left over")
        return
    for service in gone:
        yield StringCommand("rm", "-rf", shlex.quote(f"{root}/{service}"))
