"""Configuration files rendered from the plan, by the name a spec gives them in `process.files`."""

from __future__ import annotations

from collections.abc import Callable

from meshspec.common.digest import digest_text
from meshspec.plan import Instance, Plan
from meshspec.render import monitoring
from meshspec.render.haproxy import render_haproxy

Renderer = Callable[[Plan, Instance], str]


def _haproxy(plan: Plan, inst: Instance) -> str:
    return render_haproxy(plan, proxy=inst)


RENDERERS: dict[str, Renderer] = {
    "haproxy": _haproxy,
    "prometheus": monitoring.prometheus,
    "prometheus-rules": monitoring.prometheus_rules,
    "alertmanager": monitoring.alertmanager,
}
# Files whose program picks changes up itself: mesh-controller reloads HAProxy hitlessly when the
# config's shape changes, so a new haproxy.cfg must not restart the proxy.
RELOADED_BY_WATCHER = {"haproxy"}


def rendered_files(plan: Plan, inst: Instance) -> list[tuple[str, str]]:
    """(path, content) of every file the instance's process declares."""
    process = plan.service(inst.service).process
    return [(plan.render(inst, path), RENDERERS[name](plan, inst)) for path, name in sorted(process.files.items())]


def restart_digest(plan: Plan, inst: Instance) -> str | None:
    """A digest of the files whose change restarts the program (None when there are none)."""
    process = plan.service(inst.service).process
    declared = process.files if process else {}  # a container-only service has no files of meshspec's
    restarting = sorted((p, n) for p, n in declared.items() if n not in RELOADED_BY_WATCHER)
    if not restarting:
        return None
    texts = [(plan.render(inst, path), RENDERERS[name](plan, inst)) for path, name in restarting]
    return digest_text(repr(texts))
