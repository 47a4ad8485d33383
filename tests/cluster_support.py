"""Helpers for tests against the test cluster (`meshspec cluster up`): commands in a host's
network namespace, and counters of what reaches a host from the others."""

from __future__ import annotations

import contextlib
import subprocess

from meshspec.cluster import PREFIX, address


def in_host(host: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", f"{PREFIX}-{host}", *argv], input=stdin, capture_output=True,
                          text=True, timeout=30, check=True)


@contextlib.contextmanager
def _counted(host: str, chain: str, matches: dict[str, list[str]]):
    """iptables counters in a host's namespace, in a chain of their own, of the TCP packets arriving
    from another host that each named match takes. Yields a function that reads them."""
    own = address(host)
    in_host(host, "iptables", "-N", chain)
    in_host(host, "iptables", "-I", "INPUT", "-j", chain)
    for name, match in matches.items():
        in_host(host, "iptables", "-A", chain, "!", "-s", own, "-p", "tcp", *match, "-m", "comment", "--comment", name)

    def read() -> dict[str, int]:
        listed = in_host(host, "iptables", "-L", chain, "-v", "-n", "-x").stdout.splitlines()[2:]
        return {line.split("/* ")[1].split(" */")[0]: int(line.split()[0]) for line in listed}
    try:
        yield read
    finally:
        in_host(host, "iptables", "-D", "INPUT", "-j", chain)
        in_host(host, "iptables", "-F", chain)
        in_host(host, "iptables", "-X", chain)


def arrivals(host: str, ports: dict[str, int]):
    """Packets arriving from another host at each named port: how the host's instances were reached."""
    return _counted(host, "ARRIVALS", {name: ["--dport", str(port)] for name, port in ports.items()})


def carrying(host: str, texts: dict[str, str]):
    """Packets arriving from another host that carry each named text (a secret, a request line):
    what crossed between machines in the clear."""
    return _counted(host, "CARRYING", {name: ["-m", "string", "--algo", "bm", "--string", text]
                                       for name, text in texts.items()})
