"""The hosts a mesh is deployed to, parsed from `name [address]` lines: pure.

Where the lines come from (MESH_HOSTS, MESH_HOSTS_FILE) is meshspec.settings' business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOCAL = "@local"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Host:
    name: str  # as pyinfra knows it: '@local' or an SSH host name
    address: str  # where its services listen and are registered
    ssh_user: str | None = None

    @property
    def label(self) -> str:
        """The host as it appears in instance IDs: a DNS-safe label."""
        bare = "local" if self.name == LOCAL else self.name
        return re.sub(r"[^a-z0-9-]+", "-", bare.lower()).strip("-")

    @property
    def pyinfra_data(self) -> dict[str, str]:
        data = {"mesh_address": self.address, "mesh_host_label": self.label}
        return data | ({"ssh_user": self.ssh_user} if self.ssh_user else {})


class HostsError(ValueError):
    pass


def _parse_line(line: str, where: str) -> Host | None:
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    if len(words) > 2:
        raise HostsError(f"{where}: expected 'name [address]', got {line.strip()!r}")
    user, _, name = words[0].rpartition("@") if words[0] != LOCAL else ("", "", LOCAL)
    address = words[1] if len(words) == 2 else (LOOPBACK if name == LOCAL else name)
    return Host(name, address, user or None)


def parse_hosts(entries: list[tuple[str, str]]) -> list[Host]:
    """Hosts from (line, where it was read) pairs; raises HostsError naming the place of a bad line."""
    hosts = [h for line, where in entries if (h := _parse_line(line, where))]
    labels = [h.label for h in hosts]
    if not hosts:
        raise HostsError("no hosts listed")
    if len(set(labels)) != len(labels):
        raise HostsError(f"two hosts share an ID label: {', '.join(labels)}")
    return hosts
