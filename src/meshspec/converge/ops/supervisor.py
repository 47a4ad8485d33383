"""supervisord: one daemon per mesh state dir, one program per instance."""

from __future__ import annotations

import hashlib
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, StringCommand, operation

from meshspec.converge.facts.files import FileDigests, MissingDirectories
from meshspec.converge.facts.snapshot import current
from meshspec.converge.facts.supervisor import ProcessesUnder, ProgramFiles, Programs, SupervisordPid
from meshspec.plan.layout import Layout
from meshspec.render.programs import Program, supervisord_conf


def _ctl(bin_dir: str, layout: Layout) -> list[str]:
    return [f"{bin_dir}/supervisorctl", "-c", str(layout.supervisor_conf)]


@operation()
def daemon(layout: Layout, bin_dir: str):
    """
    Run this mesh's supervisord, detached so it outlives the deploy (no systemd needed).

    + layout: the mesh's state layout
    + bin_dir: where supervisord and supervisorctl are installed
    """
    missing = current(MissingDirectories, paths=daemon_directories(layout))
    conf_text, conf_path = supervisord_conf(layout), str(layout.supervisor_conf)
    conf_changed = current(FileDigests, paths=[conf_path]).get(conf_path) != _digest(conf_text)
    states = current(Programs, socket=str(layout.supervisor_socket))
    if missing:
        yield StringCommand("mkdir", "-p", "-m", "755", *missing)
    if conf_changed:
        yield FileUploadCommand(StringIO(conf_text), conf_path)
        yield StringCommand("chmod", "644", conf_path)
    if states is None:
        yield StringCommand(f"{bin_dir}/supervisord", "-c", conf_path)
    elif conf_changed:
        yield StringCommand(*_ctl(bin_dir, layout), "reload")
    elif not missing:
        host.noop(f"supervisord answers, with {len(states)} programs")


def daemon_directories(layout: Layout) -> list[str]:
    return [str(d) for d in (layout.supervisor_dir, layout.programs_dir, layout.logs_dir)]


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
    files = current(ProgramFiles, directory=str(layout.programs_dir))
    ctl = _ctl(bin_dir, layout)
    states = {name: p.state for name, p in (current(Programs, socket=str(layout.supervisor_socket)) or {}).items()}
    changed = [p for p in wanted if files.get(p.name) != _digest(p.text)]
    gone = sorted(set(files) - {p.name for p in wanted})
    if gone:
        yield StringCommand(*ctl, "stop", *gone, "||", "true")
        yield StringCommand("rm", "-f", *(str(layout.program_file(name)) for name in gone))
    for p in changed:
        yield FileUploadCommand(StringIO(p.text), p.path)
    if changed or gone:
        yield StringCommand(*ctl, "update")
    # A program stopped by hand (or given up on) is drift too: start it. STARTING/BACKOFF are on their way.
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


@operation()
def no_leftovers(layout: Layout, grace: float = 5):
    """
    End processes still running from this mesh's state dir once supervisord is gone.

    Only the mesh's own programs run from there; one that left supervisord's process group and
    outlived its program must not outlive the mesh.

    + layout: the mesh's state layout
    + grace: seconds between TERM and KILL
    """
    pids = [str(p) for p in host.get_fact(ProcessesUnder, root=str(layout.root))]
    if not pids:
        host.noop("no process left over")
        return
    yield StringCommand("sh", "-c", shlex.quote(
        f"kill -TERM {' '.join(pids)} 2>/dev/null; sleep {grace}; kill -KILL {' '.join(pids)} 2>/dev/null; true"))
