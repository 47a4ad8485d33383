"""The controller's side effects on HAProxy: runtime-API commands, and hitless reloads.

Reloads (the only time HAProxy re-reads haproxy.cfg) happen when the shape embedded in
haproxy.cfg differs from the one HAProxy runs: validate the files the master will re-read (the
`-f` of its own command line: haproxy.cfg and the stats page's userlist) with `haproxy -c`, dump
`show servers state` into the server-state file (so addresses and states of all servers
survive), send `reload` to the master CLI (the `-S` socket of its command line; what SIGUSR2
does, without root: listeners are handed over, old workers finish their connections, stick
tables move over through the `peers` section), wait for the new worker.

The stick tables (MCP sessions, rate counters) move only from a worker whose own resync is over:
one that was taught by its predecessor is at once, one that was not (the first after a start, or
after a failed hand-over) gives up waiting after HAProxy's resync timeouts, 5 s for the old process
and 5 s for remote peers. A worker reloaded before that exits without teaching, and every session
it held lands on whatever server the balance picks. So a reload first waits for the running
worker's resync, and returns once the new worker holds the tables.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from meshspec.runtime.proxy.reconcile import Change
from meshspec.runtime.proxy.runtime_api import RuntimeApi, RuntimeApiError


class ReloadError(Exception):
    pass


# HAProxy's two resync timeouts (2 x PEER_RESYNC_TIMEOUT, 5 s each) plus slack.
RESYNC_TIMEOUT = 12.0


def wait_resynced(api: RuntimeApi, who: str, timeout: float = RESYNC_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if api.peers_resynced():
                return
        except RuntimeApiError:
            pass
        if time.monotonic() >= deadline:
            raise ReloadError(f"{who}'s peers section did not finish its resync within {timeout}s "
                              "(`show peers` flags): its stick tables would not survive a reload")
        time.sleep(0.05)


def master_argv(master: int) -> list[str]:
    with open(f"/proc/{master}/cmdline", "rb") as cmdline:
        return cmdline.read().decode().split("\0")


def master_configs(argv: list[str]) -> list[str]:
    """The config files HAProxy's master loads: each `-f` of its command line, in order."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-f"]


def master_cli(argv: list[str]) -> str:
    """The master CLI's unix socket: the path of the first `-S` of its command line (before its
    bind options: `path,mode,600,user,x`)."""
    found = [argv[i + 1].split(",", 1)[0] for i, arg in enumerate(argv[:-1]) if arg == "-S"]
    if not found or not found[0].startswith("/"):
        raise ReloadError(f"HAProxy's master runs without a master CLI socket (-S /path): {' '.join(argv)}")
    return found[0]


def validate_config(configs: list[str]) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    files = [arg for config in configs for arg in ("-f", config)]
    check = subprocess.run([haproxy, "-c", "-q", *files], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise ReloadError(f"{' + '.join(configs)} is invalid: {(check.stdout + check.stderr).strip()[-2000:]}")


def reload_haproxy(api: RuntimeApi, pidfile: Path, state_file: Path, timeout: float = 10.0) -> str:
    """Hitless reload: validate what the master will re-read, wait for the running worker's resync,
    save server state, `reload` through the master CLI, wait for the new worker and its stick
    tables. Returns the new worker's pid."""
    master = int(pidfile.read_text().split()[0])
    argv = master_argv(master)
    validate_config(master_configs(argv))
    wait_resynced(api, "the running HAProxy worker")
    old = api.info().get("Pid")
    state_file.write_text(api.send("show servers state"))
    RuntimeApi(master_cli(argv), api.timeout).send("reload")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = api.info().get("Pid")
            if pid and pid != old:
                wait_resynced(api, f"the new HAProxy worker {pid}")
                return pid
        except RuntimeApiError:
            pass
        time.sleep(0.05)
    raise ReloadError(f"no new HAProxy worker within {timeout}s after `reload` to master {master}")


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
