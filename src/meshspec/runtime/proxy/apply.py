"""The controller's side effects on HAProxy: runtime-API commands, and hitless reloads.

Reloads (the only time HAProxy re-reads haproxy.cfg) happen when the shape embedded in
haproxy.cfg differs from the one HAProxy runs: validate the file with `haproxy -c`, dump
`show servers state` into the server-state file (so addresses and states of all servers
survive), SIGUSR2 the master (listeners are handed over, old workers finish their connections,
stick tables move over through the `peers` section), wait for the new worker.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from meshspec.runtime.proxy.reconcile import Change
from meshspec.runtime.proxy.runtime_api import RuntimeApi, RuntimeApiError


class ReloadError(Exception):
    pass


def validate_config(config: Path) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    check = subprocess.run([haproxy, "-c", "-q", "-f", str(config)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise ReloadError(f"{config} is invalid: {(check.stdout + check.stderr).strip()[-2000:]}")


def reload_haproxy(api: RuntimeApi, pidfile: Path, state_file: Path, config: Path | None = None,
                   timeout: float = 10.0) -> str:
    """Hitless reload: validate, save server state, SIGUSR2 the master, wait for the new worker.
    Returns the new worker's pid."""
    if config is not None:
        validate_config(config)
    old = api.info().get("Pid")
    state_file.write_text(api.send("show servers state"))
    master = int(pidfile.read_text().split()[0])
    os.kill(master, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = api.info().get("Pid")
            if pid and pid != old:
                return pid
        except RuntimeApiError:
            pass
        time.sleep(0.05)
    raise ReloadError(f"no new HAProxy worker within {timeout}s after SIGUSR2 to {master}")


def apply_changes(api: RuntimeApi, changes: list[Change]) -> tuple[list[Change], list[tuple[Change, RuntimeApiError]]]:
    """Send each change's commands; a change whose command fails is reported, the others still go."""
    applied, failed = [], []
    for change in changes:
        try:
            for command in change.commands:
                api.command(command)
            applied.append(change)
        except RuntimeApiError as err:
            failed.append((change, err))
    return applied, failed
