"""A small client for HAProxy's runtime API (the `stats socket`), on a unix socket or TCP: one
command per connection.

    api = RuntimeApi("/srv/meshspec/instances/mesh-proxy-local-0/runtime.sock")   # or "127.0.0.1:PORT"
    api.servers_state("svc_files")                                  # parsed `show servers state`
    api.command("set server svc_files/spare-1 state ready")         # the controller's diff builds these
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from meshspec.runtime.proxy.outliers import ServerStats, parse_stat

# srv_admin_state bits (HAProxy 2.6 include/haproxy/server-t.h)
ADMF_FMAINT, ADMF_IMAINT, ADMF_CMAINT, ADMF_FDRAIN, ADMF_IDRAIN, ADMF_RMAINT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
ADMF_MAINT = ADMF_FMAINT | ADMF_IMAINT | ADMF_RMAINT  # CMAINT only records "disabled in the config"
ADMF_DRAIN = ADMF_FDRAIN | ADMF_IDRAIN
OP_STOPPED, OP_STARTING, OP_RUNNING, OP_STOPPING = 0, 1, 2, 3
# peers section flags (HAProxy 2.6 src/peers.c): both set = the process's own resync is over, either
# taught by the old process or given up after its timeouts. Only then does it teach its stick tables
# to the next process when it is reloaded; before, it exits without handing them over.
PEERS_F_RESYNC_LOCAL, PEERS_F_RESYNC_REMOTE = 0x01, 0x02
PEERS_RESYNC_FINISHED = PEERS_F_RESYNC_LOCAL | PEERS_F_RESYNC_REMOTE


class RuntimeApiError(Exception):
    """The runtime API refused a command or could not be reached."""


class ServerBusy(RuntimeApiError):
    """`del server` of a server that still has connections: HAProxy removes it only once they have
    ended (a tunnel's may last as long as its `timeout tunnel`). Not yet, rather than a failure."""


#: HAProxy's answer to `del server` while connections remain (2.6's src/server.c).
_BUSY = "still has connections attached to it"


@dataclass(frozen=True)
class ServerState:
    backend: str
    name: str
    id: int
    addr: str
    port: int
    op_state: int
    admin_state: int
    weight: int

    @property
    def admin(self) -> str:
        """ready | drain | maint, as `set server ... state` names them."""
        if self.admin_state & ADMF_MAINT:
            return "maint"
        if self.admin_state & ADMF_DRAIN:
            return "drain"
        return "ready"

    @property
    def is_up(self) -> bool:
        return self.op_state in (OP_RUNNING, OP_STARTING)

    @property
    def in_rotation(self) -> bool:
        """Up by its checks and ready by its admin state: the proxy sends it new requests."""
        return self.is_up and self.admin == "ready"


def parse_servers_state(text: str) -> list[ServerState]:
    """Rows of `show servers state` (format 1: a version line, a `# header` line, rows)."""
    header: list[str] = []
    rows = []
    for line in text.splitlines():
        if line.startswith("# "):
            header = line[2:].split()
            continue
        words = line.split()
        if not header or len(words) < len(header) - 1 or not words:
            continue
        row = dict(zip(header, words))
        rows.append(ServerState(
            backend=row["be_name"], name=row["srv_name"], id=int(row["srv_id"]), addr=row["srv_addr"],
            port=int(row.get("srv_port", "0")), op_state=int(row["srv_op_state"]),
            admin_state=int(row["srv_admin_state"]), weight=int(row["srv_uweight"]),
        ))
    return rows


def parse_peers_flags(text: str) -> dict[str, int]:
    """Each peers section's `flags` in `show peers`: its header lines are `0x..: [date] id=NAME
    disabled=0 flags=0x11 ...` (the peers under it start with whitespace)."""
    sections = {}
    for line in text.splitlines():
        if line[:1].isspace():
            continue
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        if "id" in fields and "flags" in fields:
            sections[fields["id"]] = int(fields["flags"], 16)
    return sections


class RuntimeApi:
    def __init__(self, address: str, timeout: float = 5.0) -> None:
        """`address`: a unix socket's path, or host:port."""
        self.address, self.timeout = address, timeout

    def _connect(self) -> socket.socket:
        if self.address.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.address)
            except OSError:
                sock.close()
                raise
            return sock
        host, _, port = self.address.rpartition(":")
        return socket.create_connection((host or "127.0.0.1", int(port)), timeout=self.timeout)

    def send(self, command: str) -> str:
        """Send one command (or several joined by ';'); the reply text."""
        try:
            with self._connect() as sock:
                sock.sendall(command.encode() + b"\n")
                sock.shutdown(socket.SHUT_WR)  # no more commands: the master CLI answers, then closes
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as err:
            raise RuntimeApiError(f"runtime API {self.address}: {err}") from err
        return b"".join(chunks).decode(errors="replace")

    def command(self, command: str) -> str:
        """`send`, raising when HAProxy answers with an error."""
        reply = self.send(command).strip()
        lowered = reply.lower()
        if _BUSY in lowered:
            raise ServerBusy(f"{command!r}: {reply}")
        if any(word in lowered for word in ("unknown command", "no such", "not found", "require", "invalid",
                                            "error", "failed", "cannot", "can't", "unexpected")):
            raise RuntimeApiError(f"{command!r}: {reply}")
        return reply

    # --- reads -----------------------------------------------------------------------------------

    def servers_state(self, backend: str | None = None) -> list[ServerState]:
        return parse_servers_state(self.send("show servers state" + (f" {backend}" if backend else "")))

    def server_stats(self) -> list[ServerStats]:
        """Every server's counters (`show stat`, servers only: `-1 4 -1`)."""
        return parse_stat(self.send("show stat -1 4 -1"))

    def backends(self) -> list[str]:
        return [b for b in self.send("show backend").split() if not b.startswith("#")]

    def info(self) -> dict[str, str]:
        out = {}
        for line in self.send("show info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    def peers_resynced(self) -> bool:
        """Whether every peers section of the answering process finished its resync (True when it
        has none)."""
        flags = parse_peers_flags(self.send("show peers"))
        return all(f & PEERS_RESYNC_FINISHED == PEERS_RESYNC_FINISHED for f in flags.values())

    def is_reachable(self) -> bool:
        try:
            return "Pid" in self.info()
        except RuntimeApiError:
            return False
