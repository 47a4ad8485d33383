"""An instance's directory and its idempotent `prepare` commands, as a stamped script: pure."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from meshspec.common.digest import digest
from meshspec.plan import Instance, Plan, Runtime

STAMP = ".meshspec-prepared"
# How the deploy makes a system user the spec names, on a host or in an image: no login, no home.
USERADD = ("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin")


def users_of(process) -> list[str]:
    """The users a program runs as or needs (`process.user`, `process.system_users`)."""
    return sorted({*process.system_users, *([process.user] if process.user else [])})


@dataclass(frozen=True)
class Preparation:
    instance_id: str
    directory: str
    user: str | None
    commands: tuple[tuple[str, ...], ...]
    runtime: Runtime = Runtime.PROCESS  # a new runtime prepares again: its users' ids may differ (an image's postgres)

    @property
    def hash(self) -> str:
        return digest([self.user, self.commands, self.runtime])

    def script(self) -> str:
        d = shlex.quote(self.directory)
        steps = ["set -e", f"mkdir -p {d}"]
        if self.user:
            steps.append(f"chown -R {shlex.quote(self.user)} {d}")
        as_user = ["runuser", "-u", self.user, "--"] if self.user else []
        steps += [f"cd {d} && {shlex.join([*as_user, *argv])}" for argv in self.commands]
        steps.append(f"echo {self.hash} > {d}/{STAMP}")
        return "\n".join(steps)


def preparation(plan: Plan, inst: Instance, runtime: Runtime = Runtime.PROCESS) -> Preparation:
    process = plan.service(inst.service).process
    commands = tuple(tuple(plan.render(inst, a) for a in argv) for argv in process.prepare)
    return Preparation(inst.id, str(plan.layout.instance_dir(inst.id)), process.user, commands, runtime)
