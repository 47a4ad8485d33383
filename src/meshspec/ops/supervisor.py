"""supervisord: one daemon per mesh state dir, one program per instance."""

from __future__ import annotations

import hashlib
from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, StringCommand, operation
from pyinfra.operations import files

from meshspec.facts.supervisor import ProgramFiles, ProgramStates, SupervisordPid
from meshspec.layout import Layout
from meshspec.programs import Program, supervisord_conf


def _ctl(bin_dir: str, layout: Layout) -> list[str]:
    return [f"{bin_dir}/supervisorctl", "-c", str(layout.supervisor_conf)]


@operation()
def daemon(layout: Layout, bin_dir: str):
    """
    Run this mesh's supervisord, detached so it outlives the deploy (no systemd needed).

    + layout: the mesh's state layout
    + bin_dir: where supervisord and supervisorctl are installed
    """
    for d in (layout.supervisor_dir, layout.programs_dir, layout.logs_dir):
        yield from files.directory._inner(path=str(d), mode="755")
    conf = StringIO(supervisord_conf(layout))
    conf_changed = list(files.put._inner(src=conf, dest=str(layout.supervisor_conf), mode="644"))
    yield from conf_changed
    pid = host.get_fact(SupervisordPid, ctl=f"{bin_dir}/supervisorctl", conf=str(layout.supervisor_conf))
    if pid is None:
        yield StringCommand(f"{bin_dir}/supervisord", "-c", str(layout.supervisor_conf))
    elif conf_changed:
        yield StringCommand(*_ctl(bin_dir, layout), "reload")
    else:
        host.noop(f"supervisord is running (pid {pid})")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@operation()
def programs(layout: Layout, bin_dir: str, wanted: list[Program]):
    """
    Make the program files exactly `wanted`, then `supervisorctl update` only if one changed.

    Programs no longer wanted are stopped before their files go: supervisord stops one
    program at a time, and a removed file would leave a process it no longer tracks.

    + layout: the mesh's state layout
    + bin_dir: where supervisorctl is installed
    + wanted: the rendered programs of this host
    """
    current = host.get_fact(ProgramFiles, directory=str(layout.programs_dir))
    changed = [p for p in wanted if current.get(p.name) != _digest(p.text)]
    gone = sorted(set(current) - {p.name for p in wanted})
    ctl = _ctl(bin_dir, layout)
    if gone:
        yield StringCommand(*ctl, "stop", *gone, "||", "true")
        yield StringCommand("rm", "-f", *(str(layout.program_file(name)) for name in gone))
    for p in changed:
        yield FileUploadCommand(StringIO(p.text), p.path)
    if changed or gone:
        yield StringCommand(*ctl, "update")
    # A program stopped by hand (or given up on) is drift too: start it. STARTING/BACKOFF are on their way.
    states = host.get_fact(ProgramStates, ctl=ctl[0], conf=ctl[2])
    halted = sorted(p.name for p in wanted if p not in changed and states.get(p.name) in ("STOPPED", "EXITED", "FATAL"))
    if halted:
        yield StringCommand(*ctl, "start", *halted)
    if not (changed or gone or halted):
        host.noop(f"{len(wanted)} programs are as declared and running")


@operation()
def stopped(layout: Layout, bin_dir: str, timeout: float = 120):
    """
    Stop this mesh's supervisord and every program it runs.

    + layout: the mesh's state layout
    + bin_dir: where supervisorctl is installed
    + timeout: seconds to wait for the daemon to exit
    """
    pid = host.get_fact(SupervisordPid, ctl=f"{bin_dir}/supervisorctl", conf=str(layout.supervisor_conf))
    if pid is None:
        host.noop("supervisord is not running")
        return
    # shutdown stops the programs one by one, then the daemon; wait until its pid is gone.
    yield StringCommand(*_ctl(bin_dir, layout), "shutdown")
    yield StringCommand("sh", "-c", f"'for i in $(seq {int(timeout * 10)}); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; exit 1'")
