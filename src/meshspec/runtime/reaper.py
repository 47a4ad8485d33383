"""`meshspec-reaper -- COMMAND...`: run a command, and when it ends, end every process it left.

supervisord stops a program by signalling its process group, but a program may start children
in a session of their own (mcp-proxy does, for the stdio server it bridges): they escape the
group kill and outlive the program. Registered as a child subreaper, this process inherits
such orphans, and ends them (TERM, then KILL) once the command has exited. Stdlib only: it
sits in front of a long-running program and should cost little.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = [int(k) for k in task.read_text().split()]
            except FileNotFoundError:
                continue
            found += kids
            todo += kids
    return found


def end_all(grace: float) -> None:
    """TERM every process left under this one, KILL those still there after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        for pid in descendants(os.getpid()):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while descendants(os.getpid()) and time.monotonic() < deadline:
            _reap()
            time.sleep(0.05)
    _reap()


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: meshspec-reaper -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    child = subprocess.Popen(args)
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    code = child.wait()
    end_all(grace=float(os.environ.get("MESHSPEC_REAPER_GRACE", "5")))
    return code
