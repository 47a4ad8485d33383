"""Workloads benchmark: resident memory per service and in total, install size and time.

Reads the running mesh of the current settings (MESH_STATE_DIR, MESH_PORT_OFFSET, MESH_SPEC):
each instance's process tree under its supervisord program, its install directory, and the
install time the deploy recorded. Goal: all 41 services <= 4 GiB resident.

    MESH_STATE_DIR=... MESH_PORT_OFFSET=... .venv/bin/python bench/workloads.py
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from xmlrpc.client import ServerProxy

from supervisor.xmlrpc import SupervisorTransport

from meshspec.converge.mesh import configured_mesh
from meshspec.render.installs import SECONDS_FILE

BUDGET_MB = 4096


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(c) for c in task.read_text().split()]
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (mcp-proxy's children run in their own session)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            todo += children(p)
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            continue
    return total / 1024


def du_mb(path: Path) -> float | None:
    if not path.exists():
        return None
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout.split()[0]) / 1024


def main() -> None:
    mesh = configured_mesh()
    layout = mesh.plan.layout
    if not Path(str(layout.supervisor_socket)).exists():
        print(f"skipped: no mesh is deployed at {layout.root} (make deploy, or set MESH_STATE_DIR)")
        return
    rpc = ServerProxy("http://localhost", transport=SupervisorTransport(None, None, f"unix://{layout.supervisor_socket}"))
    pids = {p["name"]: p["pid"] for p in rpc.supervisor.getAllProcessInfo() if p["pid"]}
    rows, total = [], 0.0
    for service in mesh.plan.spec.services:
        rss = sum(tree_rss_mb(pids[i.id]) for i in mesh.plan.instances_of(service.name) if i.id in pids)
        install = Path(str(mesh.plan.install_dir(service.name)))  # in the host's shared install cache
        seconds = install / SECONDS_FILE
        rows.append((service.name, service.kind, rss, du_mb(install), seconds.read_text().strip() if seconds.exists() else "-"))
        total += rss
    print(f"{'service':22} {'kind':10} {'RSS MB':>8} {'install MB':>10} {'install s':>9}")
    for name, kind, rss, size, secs in sorted(rows, key=lambda r: -r[2]):
        print(f"{name:22} {kind:10} {rss:8.0f} {'-' if size is None else round(size):>10} {secs:>9}")
    print(f"total resident: {total:.0f} MB of a {BUDGET_MB} MB budget = {total / BUDGET_MB:.2f}x"
          f"{'  OVER BUDGET' if total > BUDGET_MB else ''}")
    installed = [r[3] for r in rows if r[3]]
    print(f"total install size: {sum(installed):.0f} MB over {len(installed)} isolated installs")


if __name__ == "__main__":
    main()
