"""Configuration files rendered from the plan, by the name a spec gives them in `process.files`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from meshspec.configs import monitoring
from meshspec.plan import Instance, Plan

Renderer = Callable[[Plan, Instance], str]

RENDERERS: dict[str, Renderer] = {
    "prometheus": monitoring.prometheus,
    "prometheus-rules": monitoring.prometheus_rules,
    "alertmanager": monitoring.alertmanager,
}


def rendered_files(plan: Plan, inst: Instance) -> list[tuple[str, str]]:
    """(path, content) of every file the instance's process declares."""
    process = plan.service(inst.service).process
    return [(plan.render(inst, path), RENDERERS[name](plan, inst)) for path, name in sorted(process.files.items())]


def files_digest(files: list[tuple[str, str]]) -> str:
    return hashlib.sha256(repr(files).encode()).hexdigest()[:16]
