"""An instance's directory and its idempotent `prepare` commands, as a stamped script: pure."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from meshspec.common.digest import digest
from meshspec.common.haproxy_shape import LOADED_SHAPE
from meshspec.plan import Instance, Plan, Runtime
from meshspec.render.haproxy import proxy_paths

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
    # The file each command reads on its stdin, or None: one per command when any is given.
    stdins: tuple[str | None, ...] = ()

    @property
    def hash(self) -> str:
        return digest([self.user, self.commands, self.runtime] + ([self.stdins] if any(self.stdins) else []))

    def script(self) -> str:
        d = shlex.quote(self.directory)
        steps = ["set -e", f"mkdir -p {d}"]
        if self.user:
            steps.append(f"chown -R {shlex.quote(self.user)} {d}")
        as_user = ["runuser", "-u", self.user, "--"] if self.user else []
        for argv, stdin in zip(self.commands, self.stdins or [None] * len(self.commands)):
            if stdin:
                # root opens the secret and pipes it to the user, who need not be able to open it;
                # the user's own `cat` passes it on through a pipe of the user's, since a command
                # may reopen its stdin as /dev/stdin (initdb --pwfile) and a pipe root made is root's.
                relay = [*as_user, "sh", "-c", 'cat | "$@"', "sh"] if self.user else []
                steps.append(f"cd {d} && cat {shlex.quote(stdin)} | {shlex.join([*relay, *argv])}")
            else:
                steps.append(f"cd {d} && {shlex.join([*as_user, *argv])}")
        steps.append(f"echo {self.hash} > {d}/{STAMP}")
        return "\n".join(steps)


def preparation(plan: Plan, inst: Instance, runtime: Runtime = Runtime.PROCESS) -> Preparation:
    process = plan.service(inst.service).process
    steps = process.prepare_argvs()
    commands = tuple(tuple(plan.render(inst, a) for a in argv) for argv, _ in steps)
    stdins = tuple(plan.render(inst, stdin) if stdin else None for _, stdin in steps)
    controller = _controller_state(plan, inst)
    return Preparation(inst.id, str(plan.layout.instance_dir(inst.id)), process.user, commands + controller, runtime,
                       stdins + (None,) * len(controller) if any(stdins) else ())


def _controller_state(plan: Plan, inst: Instance) -> tuple[tuple[str, ...], ...]:
    """In the proxy's directory (root's), the files the controller writes, made its user's: the
    server state (HAProxy's master reads it as root at each reload), the shape HAProxy loaded, and
    the intentions map (empty until the controller fills it: until then the mTLS listener denies)
    and, where it has an inbound listener, the inbound map (this host's instances beyond the plan
    that the listener serves, none until the controller adds them)."""
    user = plan.proxy_controller_user
    if not user or inst.service != plan.spec.proxy.service:
        return ()
    paths = proxy_paths(plan, inst)
    state = PurePosixPath(paths["state_file"])
    inbound = [paths["inbound"]] if plan.inbound_port(inst) is not None else []
    files = shlex.join([str(state), str(state.with_name(LOADED_SHAPE)), paths["intentions"], *inbound])
    return (("sh", "-c", f"touch {files} && chown {shlex.quote(user)} {files}"),)
