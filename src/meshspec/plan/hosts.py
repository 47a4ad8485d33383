"""The hosts a mesh is deployed to, parsed from `name [address] [groups=a,b] [ssh_...=value]`
lines: pure.

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
    groups: tuple[str, ...] = ()  # which a service's placement may name instead of each host
    ssh: tuple[tuple[str, str], ...] = ()  # pyinfra's SSH connection data (SSH_KEYS), as listed

    @property
    def pyinfra_data(self) -> dict[str, str]:
        data = {"mesh_address": self.address, "mesh_host_label": self.label, "mesh_groups": list(self.groups),
                **dict(self.ssh)}
        return data | ({"ssh_user": self.ssh_user} if self.ssh_user else {})

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL

    def ssh_command(self, *options: str) -> list[str]:
        """`ssh` to this host with its connection settings as pyinfra uses them (the hosts file's
        `ssh_*`) and `options`, to be followed by a command; [] for @local, where a command runs as it is."""
        if self.is_local:
            return []
        given = dict(self.ssh)
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", *options]
        argv += ["-p", given["ssh_port"]] if "ssh_port" in given else []
        argv += ["-i", given["ssh_key"]] if "ssh_key" in given else []
        argv += ["-o", f"UserKnownHostsFile={given['ssh_known_hosts_file']}"] if "ssh_known_hosts_file" in given else []
        argv += (["-o", f"StrictHostKeyChecking={given['ssh_strict_host_key_checking']}"]
                 if "ssh_strict_host_key_checking" in given else [])
        target = given.get("ssh_hostname", self.name)
        return [*argv, f"{self.ssh_user}@{target}" if self.ssh_user else target, "--"]

    @property
    def label(self) -> str:
        """The host as it appears in instance IDs: a DNS-safe label."""
        bare = "local" if self.name == LOCAL else self.name
        return re.sub(r"[^a-z0-9-]+", "-", bare.lower()).strip("-")


class HostsError(ValueError):
    pass


GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
#: pyinfra's SSH connection data a line may set: where to connect (the name is the host's in the
#: mesh), with which key, checking the host's key against which file (a test cluster's own).
SSH_KEYS = ("ssh_hostname", "ssh_port", "ssh_key", "ssh_known_hosts_file", "ssh_strict_host_key_checking")
USAGE = "'name [address] [groups=a,b] [ssh_...=value]'"


def _parse_line(line: str, where: str) -> Host | None:
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    pairs = [w.split("=", 1) for w in words if "=" in w]
    options, words = dict(pairs), [w for w in words if "=" not in w]
    if len(words) not in (1, 2) or len(options) != len(pairs):  # a key twice is a mistake too
        raise HostsError(f"{where}: expected {USAGE}, got {line.strip()!r}")
    if unknown := sorted(set(options) - {"groups", *SSH_KEYS}):
        raise HostsError(f"{where}: {unknown[0]!r} is not one of groups, {', '.join(SSH_KEYS)}, in {line.strip()!r}")
    groups = tuple(options.pop("groups").split(",")) if "groups" in options else ()
    if bad := [g for g in groups if not GROUP.fullmatch(g)]:
        raise HostsError(f"{where}: {bad[0]!r} is no group name (letters, digits, '.', '_', '-'), in {line.strip()!r}")
    user, _, name = words[0].rpartition("@") if words[0] != LOCAL else ("", "", LOCAL)
    address = words[1] if len(words) == 2 else (LOOPBACK if name == LOCAL else name)
    return Host(name, address, user or None, groups, tuple(sorted(options.items())))


def parse_hosts(entries: list[tuple[str, str]]) -> list[Host]:
    """Hosts from (line, where it was read) pairs; raises HostsError naming the place of a bad line."""
    hosts = [h for line, where in entries if (h := _parse_line(line, where))]
    labels = [h.label for h in hosts]
    if not hosts:
        raise HostsError("no hosts listed")
    if len(set(labels)) != len(labels):
        raise HostsError(f"two hosts share an ID label: {', '.join(labels)}")
    return hosts


def inventory_names(hosts: list[Host]) -> frozenset[str]:
    """What a service's placement may name: each host's name and ID label, and the groups."""
    return frozenset(n for h in hosts for n in (h.name, h.label, *h.groups))


def placed(hosts: list[Host], names: list[str], spread: bool) -> list[Host]:
    """The hosts a placement selects, in the inventory's order (none named: every host); only the
    first of them unless the replicas spread."""
    chosen = [h for h in hosts if not names or {h.name, h.label, *h.groups} & set(names)]
    if not chosen:
        raise HostsError(f"the placement {names} names none of the hosts: {', '.join(h.name for h in hosts)}")
    return chosen if spread else chosen[:1]
