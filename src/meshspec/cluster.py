"""`meshspec cluster up|down`: a test cluster of hosts on this machine, each a network namespace
with its own sshd, for deploying the mesh over SSH (`make cluster`, `make cluster-down`).

Each host `h<i>` is a network namespace on a bridge (`10.213.0.<i+1>`; this machine is
`10.213.0.1` on it), running Debian's sshd in a mount and UTS namespace of its own: it sees its own
hostname and its own `/srv/meshspec` (a directory of the cluster's bind-mounted there), so a deploy
to it keeps its state apart, as on a machine of its own; and it does not see meshspec's checkout
or the deploy's venv (an empty tmpfs on each), as a machine of its own would not: what runs there
is what the deploy put there. Everything else is this machine's: one filesystem, one dpkg
database and apt lock, one process table. The cluster's directory holds the
client key, the hosts' keys, `known_hosts` and the `hosts` file a deploy reads
(`MESH_HOSTS_FILE=<dir>/hosts`), each line saying how pyinfra reaches the host.

The hosts reach each other over the bridge, and the package registries as this machine does,
through it (a default route to the bridge, masqueraded by `iptables`, forwarded): a deploy
installs on each host. `down` ends every
process in the namespaces (so every mount namespace goes with its last process), deletes the
namespaces, the links, those rules and the directory, and puts back IP forwarding as it was:
nothing is left behind. Needs root and `ip`, `iptables`, `unshare`, `ssh-keygen` and
`/usr/sbin/sshd` (Debian's openssh-server).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

PREFIX = "msc"  # the namespaces' and links' names: msc-h1, msc-br0, ...
BRIDGE = f"{PREFIX}-br0"
SUBNET = "10.213.0"
STATE_DIR = "/srv/meshspec"  # the mesh's default state dir, each host's own
DEFAULT_DIR = Path("/tmp/meshspec-cluster")
FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")
# The hosts' way out and to each other, as iptables rules (table, chain, rule), each marked as the
# cluster's: in first place, since the docker engine's FORWARD policy drops what no rule of its
# accepts, frames between two hosts of the bridge included (it turns on br_netfilter's
# bridge-nf-call-iptables).
TAG = ["-m", "comment", "--comment", "meshspec-cluster"]
ROUTING = (
    ("nat", "POSTROUTING", ["-s", f"{SUBNET}.0/24", "!", "-o", BRIDGE, "-j", "MASQUERADE", *TAG]),
    ("filter", "FORWARD", ["-i", BRIDGE, "-j", "ACCEPT", *TAG]),
    ("filter", "FORWARD", ["-o", BRIDGE, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT", *TAG]),
)
SSHD = "/usr/sbin/sshd"
app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True)


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def host_names(count: int) -> list[str]:
    return [f"h{i}" for i in range(1, count + 1)]


def address(host: str) -> str:
    return f"{SUBNET}.{int(host[1:]) + 1}"


def namespace(host: str) -> str:
    return f"{PREFIX}-{host}"


def namespaces() -> list[str]:
    """The cluster's namespaces on this machine now."""
    listed = _run("ip", "netns", "list").stdout.split()
    return [name for name in listed if name.startswith(f"{PREFIX}-h")]


def sshd_config(directory: Path, host: str) -> str:
    own = directory / host
    return "\n".join([
        f"ListenAddress {address(host)}",
        f"HostKey {own / 'ssh_host_ed25519_key'}",
        f"PidFile {own / 'sshd.pid'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",  # the deploy's user, as pyinfra's @local runs as root
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # the keys live under /tmp, which sshd's mode checks refuse
        "Subsystem sftp internal-sftp",  # pyinfra's file uploads
        "",
    ])


def hosts_line(directory: Path, host: str, groups: str) -> str:
    """The host as `MESH_HOSTS_FILE` lists it (plan/hosts.py): how pyinfra reaches it, and its key."""
    return (f"root@{host} {address(host)} groups={groups} ssh_hostname={address(host)} "
            f"ssh_key={directory / 'id_ed25519'} ssh_known_hosts_file={directory / 'known_hosts'}")


def start_host(directory: Path, host: str) -> None:
    own, ns = directory / host, namespace(host)
    (own / "srv").mkdir(parents=True)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host, "-f", str(own / "ssh_host_ed25519_key"))
    (own / "sshd_config").write_text(sshd_config(directory, host))
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _run("ip", "link", "set", ns, "master", BRIDGE, "up")
    for argv in (["ip", "addr", "add", f"{address(host)}/24", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                 ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "default", "via", f"{SUBNET}.1"]):
        _run("ip", "netns", "exec", ns, *argv)
    # Its own hostname and state dir, in namespaces sshd (a daemon: the shell's child) keeps alive.
    hidden = "".join(f"mount -t tmpfs -o size=64k,mode=755 meshspec-hidden {shlex.quote(str(p))} && "
                     for p in hidden_from_hosts(directory))
    script = (f"hostname {host} && mount --bind {own / 'srv'} {STATE_DIR} && {hidden}mkdir -p /run/sshd && "
              f"exec {SSHD} -f {own / 'sshd_config'}")
    _run("ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script)


def hidden_from_hosts(directory: Path) -> list[Path]:
    """meshspec's checkout and the deploy's venv (when not in it): a host must not run from them.
    Not one that holds the cluster's directory or the state dir, which the hosts need."""
    from meshspec.converge.source import source_root

    found = [source_root(), Path(sys.prefix).resolve()]
    needed = [directory.resolve(), Path(STATE_DIR)]
    keep = [p for p in found if not any(n == p or p in n.parents for n in needed)]
    return [p for p in keep if not any(o in p.parents for o in keep)]


def wait_for_sshd(directory: Path, host: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = _run("ssh", "-i", str(directory / "id_ed25519"), "-o", f"UserKnownHostsFile={directory / 'known_hosts'}",
                     "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=2",
                     f"root@{address(host)}", "hostname", check=False)
        if probe.returncode == 0 and probe.stdout.strip() == host:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{host}: sshd did not answer at {address(host)} within {timeout:.0f} s: {probe.stderr.strip()}")


def _failure(err: Exception) -> str:
    """The step that failed, in one line."""
    if isinstance(err, subprocess.CalledProcessError):
        said = (err.stderr or err.stdout or "").strip().splitlines()
        return f"`{' '.join(err.cmd)}` exited with {err.returncode}" + (f": {said[-1]}" if said else "")
    return str(err)


@app.command()
def up(
    directory: Annotated[Path, typer.Option("--dir", help="Where the cluster's keys and hosts file live.")] = DEFAULT_DIR,
    count: Annotated[int, typer.Option("--hosts", min=1, max=9, help="How many hosts.")] = 3,
) -> None:
    """Start the hosts and write `<dir>/hosts` (h1 in group `core`, the others in `web`)."""
    if namespaces() or directory.exists():
        raise typer.BadParameter(f"a cluster is up already ({', '.join(namespaces()) or directory}): "
                                 "`meshspec cluster down` first", param_hint="up")
    try:
        _start(directory, count)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as err:
        # Half a cluster is nobody's: undo what was made, so that `up` can simply run again.
        typer.echo(f"cluster up failed: {_failure(err)}; what it had made is removed", err=True)
        _remove(directory, say=lambda line: None)
        raise typer.Exit(1) from None
    typer.echo(f"MESH_HOSTS_FILE={directory / 'hosts'}")


def _start(directory: Path, count: int) -> None:
    Path(STATE_DIR).mkdir(parents=True, exist_ok=True)  # the mount point each host's own is bound on
    directory.mkdir(parents=True, mode=0o700)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "meshspec-cluster", "-f", str(directory / "id_ed25519"))
    (directory / "authorized_keys").write_text((directory / "id_ed25519.pub").read_text())
    (directory / "ip_forward").write_text(FORWARDING.read_text())  # put back by `down`
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    FORWARDING.write_text("1\n")
    for table, chain, rule in ROUTING:
        _run("iptables", "-t", table, "-I", chain, "1", *rule)
    lines, known = [], []
    for host in host_names(count):
        start_host(directory, host)
        key = (directory / host / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        known.append(f"{address(host)} {' '.join(key)}")
        lines.append(hosts_line(directory, host, "core" if host == "h1" else "web"))
    (directory / "known_hosts").write_text("\n".join(known) + "\n")
    (directory / "hosts").write_text("\n".join(lines) + "\n")
    for host in host_names(count):
        wait_for_sshd(directory, host)
        typer.echo(f"{host}: {address(host)}, sshd answers")


@app.command()
def down(
    directory: Annotated[Path, typer.Option("--dir", help="Where the cluster's keys and hosts file live.")] = DEFAULT_DIR,
) -> None:
    """End every process of the cluster's namespaces and remove the namespaces, links and directory."""
    try:
        _remove(directory, say=typer.echo)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as err:
        typer.echo(f"cluster down failed: {_failure(err)}", err=True)
        raise typer.Exit(1) from None


def _remove(directory: Path, say) -> None:
    """Whatever of a cluster is there; each step finds its part gone without failing."""
    for ns in namespaces():
        for attempt in range(50):  # TERM, then KILL what is left, until the namespace holds nothing
            pids = [int(p) for p in _run("ip", "netns", "pids", ns, check=False).stdout.split()]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL if attempt > 20 else signal.SIGTERM)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{ns}: processes {pids} did not end")
        _run("ip", "netns", "del", ns)
        say(f"{ns}: removed")
    _run("ip", "link", "del", BRIDGE, check=False)
    for table, chain, rule in ROUTING:
        while _run("iptables", "-t", table, "-D", chain, *rule, check=False).returncode == 0:
            pass  # every copy, should `up` have run twice
    if (directory / "ip_forward").exists():
        FORWARDING.write_text((directory / "ip_forward").read_text())
    _run("rm", "-rf", str(directory))
