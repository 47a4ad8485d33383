"""What verify reads on a host of the mesh: its files, its supervisord, its instances' probes. On
this host (@local) directly; on another, over SSH with the connection settings the deploy uses
(the hosts file's `ssh_*`), in the manner of pytest-testinfra's SSH backend: one `ssh` per read,
meshspec's install on the host reading its supervisord and running its probes there. What verify
says with a secret to a service of another host (the registry's API with the management token, a
proxy's edge with the operator's key) goes through an `ssh -L` of that host (`forwarded`), as the
deploy's does through its SSH connection: never in the clear between machines."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from meshspec.plan.hosts import Host
from meshspec.runtime.probes.protocols import Result
from meshspec.verify.checks import Supervisor, one_line

# sshd drops unauthenticated connections beyond MaxStartups (10 by default): verify's parallel reads
# of one host go at most a few at a time.
_AT_ONCE: dict[str, threading.BoundedSemaphore] = {}
_AT_ONCE_LOCK = threading.Lock()  # two first reads of one host at once must share one semaphore


def _at_once(host: str) -> threading.BoundedSemaphore:
    with _AT_ONCE_LOCK:
        return _AT_ONCE.setdefault(host, threading.BoundedSemaphore(4))


@dataclass(frozen=True)
class HostReader:
    host: Host
    timeout: float = 10.0

    def _ssh(self, command: list[str], stdin: str | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
        remote, timeout = shlex.join(command), timeout or self.timeout  # ssh hands the remote shell one string
        try:
            with _at_once(self.host.name):
                return subprocess.run([*self.host.ssh_command(), remote], input=stdin, capture_output=True, text=True,
                                      timeout=timeout)
        except subprocess.TimeoutExpired:
            raise OSError(f"{self.host.name}: ssh did not answer within {timeout:.0f}s") from None

    def _failed(self, done: subprocess.CompletedProcess, what: str) -> OSError:
        said = done.stderr.strip().splitlines()
        return OSError(f"{self.host.name}: {what} (ssh exited {done.returncode}{': ' + said[-1] if said else ''})")

    def read_text(self, path: str | Path) -> str:
        """The file's text; FileNotFoundError when it is not there, OSError when it cannot be read."""
        if self.host.is_local:
            return Path(path).read_text()
        done = self._ssh(["sh", "-c", 'test -e "$1" || exit 3; cat "$1"', "sh", str(path)])
        if done.returncode == 3:
            raise FileNotFoundError(f"{self.host.name}:{path}: no such file")
        if done.returncode != 0:
            raise self._failed(done, f"reading {path}")
        return done.stdout

    def exists(self, path: str | Path) -> bool:
        if self.host.is_local:
            return Path(path).exists()
        done = self._ssh(["test", "-e", str(path)])
        if done.returncode not in (0, 1):
            raise self._failed(done, f"looking for {path}")
        return done.returncode == 0

    def probes(self, meshspec: str, probes: dict[str, tuple[dict, float]]) -> dict[str, Result]:
        """{name: (probe, timeout)} run at once on the host by meshspec's install there (`meshspec
        probe run`, one SSH session for them all), as the host's checker runs them: with the secret
        files they read, which stay on that host, and the proof of whose process holds each port,
        which only that host's /proc can give."""
        wanted = {name: {"probe": probe, "timeout": timeout} for name, (probe, timeout) in probes.items()}
        where = f"{self.host.name}: {meshspec} probe run"
        try:
            done = self._ssh([meshspec, "probe", "run"], stdin=json.dumps(wanted),
                             timeout=max(t for _, t in probes.values()) + self.timeout)
        except OSError as err:
            return {name: Result(False, f"{where}: {one_line(err)}") for name in probes}
        try:
            return {name: Result(**answer) for name, answer in json.loads(done.stdout).items()}
        except (ValueError, TypeError, AttributeError):
            said = done.stderr.strip().splitlines()
            why = f"{where} exited {done.returncode}: {said[-1] if said else done.stdout.strip()[:200]}"
            return {name: Result(False, why) for name in probes}

    def supervisor(self, meshspec: str, socket_path: str, timeout: float = 2.0) -> Supervisor:
        """The host's supervisord's programs, read there by meshspec's install (`meshspec probe supervisor`)."""
        if self.host.is_local:
            return Supervisor.read(socket_path, timeout)
        where = f"{self.host.name}:{socket_path}"
        try:
            done = self._ssh([meshspec, "probe", "supervisor", socket_path, "--timeout", str(timeout)])
        except OSError as err:
            return Supervisor(where, error=f"supervisord at {where} is not read: {one_line(err)}")
        if done.returncode != 0:
            said = done.stderr.strip().splitlines()
            return Supervisor(where, error=f"supervisord at {where} does not answer: {said[-1] if said else done.returncode}")
        return Supervisor.from_infos(where, json.loads(done.stdout))


_FORWARDS: dict[tuple[str, str, int], tuple[subprocess.Popen, int]] = {}  # (host, address, port) -> ssh, local port
_FORWARDS_LOCK = threading.Lock()


def forwarded(host: Host, address: str, port: int, timeout: float = 10.0) -> tuple[str, int]:
    """Where on this machine a connection goes to `address:port` as `host` reaches it: the local end
    of an `ssh -L` with the host's connection settings, one per (host, address, port) until
    the `forwards()` around it ends. OSError when ssh cannot set it up."""
    key = (host.name, address, port)
    with _FORWARDS_LOCK:
        if key not in _FORWARDS or _FORWARDS[key][0].poll() is not None:
            _FORWARDS[key] = _start_forward(host, address, port, timeout)
        return "127.0.0.1", _FORWARDS[key][1]


def _start_forward(host: Host, address: str, port: int, timeout: float) -> tuple[subprocess.Popen, int]:
    with socket.socket() as probe:  # a free port for ssh to listen on (taken again at once, by ssh)
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    argv = host.ssh_command("-N", "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local}:{address}:{port}")[:-1]
    ssh = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while ssh.poll() is None and time.monotonic() < deadline:
        try:  # ssh listens once it has logged in
            socket.create_connection(("127.0.0.1", local), timeout=1).close()
            return ssh, local
        except OSError:
            time.sleep(0.05)
    ssh.kill()
    said = ssh.communicate()[1].strip().splitlines()
    raise OSError(f"{host.name}: ssh -L to {address}:{port} " + (f"exited {ssh.returncode}: {said[-1]}" if said
                                                                else f"did not listen within {timeout:.0f}s"))


@contextmanager
def forwards() -> Iterator[None]:
    """The SSH forwards opened meanwhile end with it."""
    try:
        yield
    finally:
        _close_forwards()


def _close_forwards() -> None:
    with _FORWARDS_LOCK:
        for ssh, _ in _FORWARDS.values():
            ssh.terminate()
        for ssh, _ in _FORWARDS.values():
            try:
                ssh.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # verify's verdict stands; the forward must not outlive it
                ssh.kill()
                ssh.communicate()
        _FORWARDS.clear()
