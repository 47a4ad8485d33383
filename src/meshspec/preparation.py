"""An instance's directory and its idempotent `prepare` commands, as a stamped script: pure."""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass

from meshspec.plan import Instance, Plan

STAMP = ".meshspec-prepared"


@dataclass(frozen=True)
class Preparation:
    instance_id: str
    directory: str
    user: str | None
    commands: tuple[tuple[str, ...], ...]
    runtime: str = "process"  # a new runtime prepares again: its users' ids may differ (an image's postgres)

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps([self.user, self.commands, self.runtime]).encode()).hexdigest()[:16]

    def script(self) -> str:
        d = shlex.quote(self.directory)
        steps = ["set -e", f"mkdir -p {d}"]
        if self.user:
            steps.append(f"chown -R {shlex.quote(self.user)} {d}")
        as_user = ["runuser", "-u", self.user, "--"] if self.user else []
        steps += [f"cd {d} && {shlex.join([*as_user, *argv])}" for argv in self.commands]
        steps.append(f"echo {self.hash} > {d}/{STAMP}")
        return "\n".join(steps)


def preparation(plan: Plan, inst: Instance, runtime: str = "process") -> Preparation:
    process = plan.service(inst.service).process
    commands = tuple(tuple(plan.render(inst, a) for a in argv) for argv in process.prepare)
    return Preparation(inst.id, str(plan.layout.instance_dir(inst.id)), process.user, commands, runtime)
