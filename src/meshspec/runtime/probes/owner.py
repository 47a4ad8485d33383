"""Who answered: the second half of every proof. A probe that passes shows that something at
address:port speaks the service's protocol; this shows that it is the instance's own process (its
supervised program's process tree, or its container's), and otherwise names the pid and command
that hold the port instead:

    127.0.0.1:PORT is held by pid 4711 (python3 liar.py), not by program backend-api-local-0

Cheap enough for every interval. The host's listening sockets come from the kernel's table
(/proc/net/tcp and tcp6: 4 ms a read with 1,400 sockets; pyroute2's sock_diag took 3 ms but cost
every process 0.1 s to import, a tenth of `meshspec verify`), one read shared by every check of
the process for SNAPSHOT_SECONDS. A tree is its root and the kernel's list of each process's
children (/proc/PID/task/TID/children), so only the tree's own processes are read. Only the
remembered tree's descriptors are read; supervisord (or the engine) is asked again only when that
tree does not hold the socket (a restart), and every process is read only when the new tree does
not hold it either, to name who does. Reading other users' descriptors
needs root: the checker runs as root; a verify run by another user fails the proof and says why.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import xmlrpc.client
from dataclasses import dataclass

import psutil

from meshspec.runtime.supervisor_rpc import supervisor_rpc

TCP_LISTEN = 10  # the kernel's TCP state number
#: How long one dump of the host's listeners serves every check of the process. Its age cannot pass
#: a liar: a check passes only when the instance's tree holds one of the listed sockets *now*, and
#: a socket that exists stays bound to its port; a miss takes a fresh dump before it fails.
SNAPSHOT_SECONDS = 30.0


@dataclass(frozen=True)
class Owner:
    """Whose port it is, as the checks file carries it: `program` (supervisord's, at its socket)
    or `container` (the Docker engine's)."""

    address: str
    port: int
    program: str | None = None
    supervisor_socket: str | None = None
    container: str | None = None

    @property
    def who(self) -> str:
        return f"program {self.program}" if self.program else f"container {self.container}"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # one line: who holds the port
    pid: int | None = None
    listening: bool = True  # False: nothing listens there at all


class Listeners:
    """{(address, port): socket inodes} of the host's TCP listeners, from one read of the kernel's table."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -SNAPSHOT_SECONDS
        self._table: dict[tuple[str, int], set[int]] = {}

    def inodes(self, address: str, port: int, fresh: bool = False) -> set[int]:
        """Sockets listening at address:port, or at a wildcard address and that port."""
        table = self._snapshot(fresh)
        found: set[int] = set()
        for ip in (address, f"::ffff:{address}", "0.0.0.0", "::"):
            found |= table.get((ip, port), set())
        return found

    def _snapshot(self, fresh: bool) -> dict[tuple[str, int], set[int]]:
        with self._lock:
            if fresh or time.monotonic() - self._at >= SNAPSHOT_SECONDS:
                self._table, self._at = _dump(), time.monotonic()
            return self._table


def _dump() -> dict[tuple[str, int], set[int]]:
    table: dict[tuple[str, int], set[int]] = {}
    for path, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(path) as table_file:
                lines = table_file.read().splitlines()[1:]
        except FileNotFoundError:  # a kernel without IPv6
            continue
        for line in lines:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            fields = line.split()
            if int(fields[3], 16) != TCP_LISTEN:
                continue
            address, port = fields[1].split(":")
            table.setdefault((_address(address, family), int(port, 16)), set()).add(int(fields[9]))
    return table


def _address(hexed: str, family: int) -> str:
    """The kernel's hex of an address (32-bit words, each in the host's byte order) as text."""
    raw = bytes.fromhex(hexed)
    words = (int.from_bytes(raw[i:i + 4], sys.byteorder).to_bytes(4, "big") for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, b"".join(words))


LISTENERS = Listeners()


def held_by(pid: int, inodes: set[int]) -> bool:
    """True when process `pid` has one of these sockets open (PermissionError: not ours to read)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            return True
    return False


def holder(inodes: set[int]) -> int | None:
    """Who holds one of the sockets, whoever it is: reads every process, so only to name the holder
    of a failure."""
    for pid in psutil.pids():
        try:
            if held_by(pid, inodes):
                return pid
        except PermissionError:
            continue
    return None


def describe(pid: int) -> str:
    """`pid N (python3 liar.py --port 8080)`: argv with each path cut to its file name, so the
    program shows within 80 characters wherever it was installed (the pid tells the rest)."""
    try:
        process = psutil.Process(pid)
        argv = [(os.path.basename(arg) or arg) if arg.startswith("/") else arg for arg in process.cmdline()]
        command = " ".join(" ".join(argv).split()) or process.name()  # one line, whatever argv holds
    except psutil.Error:
        command = "gone"
    return f"pid {pid} ({command if len(command) <= 80 else command[:77] + '...'})"


def root_pid(owner: Owner, timeout: float) -> tuple[int | None, str]:
    """The top pid of the instance's process, as supervisord or the engine reports it, and its state."""
    if owner.program:
        try:
            info = supervisor_rpc(owner.supervisor_socket, timeout).getProcessInfo(owner.program)
        except (OSError, xmlrpc.client.Error) as err:
            return None, f"supervisord does not say which pid runs {owner.program}: {err}"
        return (info["pid"] or None), f"program {owner.program} is {info['statename']}"
    import docker  # the docker runtime only

    try:
        engine = docker.from_env(timeout=max(1, int(timeout)))
        try:
            state = engine.containers.get(owner.container).attrs["State"]
        finally:
            engine.close()
    except docker.errors.DockerException as err:
        return None, f"the Docker engine does not say which pid runs container {owner.container}: {err}"
    return (state.get("Pid") or None), f"container {owner.container} is {state.get('Status')}"


class Tracker:
    """Checks, interval after interval, that one instance's port is held by its own process tree,
    remembering the tree between calls."""

    def __init__(self, owner: Owner, listeners: Listeners = LISTENERS, root: int | None = None) -> None:
        """`root`: the instance's top pid when the caller already read it (verify reads every
        program's in one call), so the first check need not ask supervisord again."""
        self.owner = owner
        self.listeners = listeners
        self.tree: list[int] = tree(root) if root else []

    def check(self, timeout: float = 2.0) -> Verdict:
        o = self.owner
        try:
            inodes = self.listeners.inodes(o.address, o.port)
            if found := self._in_tree(inodes):
                return found
            # A miss: the tree may be a dead program's (or not known yet: a tracker's first check)...
            root, state = root_pid(o, timeout)
            self.tree = tree(root) if root else []
            if found := self._in_tree(inodes):
                return found
            # ... or the snapshot may predate a restart. (Not dumping again before the tree is known
            # saves a dump per instance for a verify run, whose trackers are all new.)
            inodes = self.listeners.inodes(o.address, o.port, fresh=True)
            if found := self._in_tree(inodes):
                return found
            if not inodes:
                return Verdict(False, f"nothing listens at {o.address}:{o.port} ({state})", listening=False)
            other = holder(inodes)
        except PermissionError as err:
            return Verdict(False, f"cannot tell who holds {o.address}:{o.port}: {err.strerror}: {err.filename}"
                                  " (proving who answered needs root)")
        if other is None:
            return Verdict(False, f"no process this user can read holds {o.address}:{o.port} ({state})")
        return Verdict(False, f"{o.address}:{o.port} is held by {describe(other)}, not by {o.who} ({state})", other)

    def _in_tree(self, inodes: set[int]) -> Verdict | None:
        pid = next((p for p in self.tree if held_by(p, inodes)), None) if inodes else None
        return Verdict(True, f"held by pid {pid} of {self.owner.who}", pid) if pid else None


def tree(root: int) -> list[int]:
    """`root` and its descendants, from the kernel's list of each thread's children (what psutil's
    `children()` finds by reading every process's stat)."""
    found, i = [root], 0
    while i < len(found):
        pid, i = found[i], i + 1
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:  # gone meanwhile: it holds nothing
            continue
        for tid in threads:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as children:
                    found += [int(child) for child in children.read().split()]
            except FileNotFoundError:
                continue
    return found
