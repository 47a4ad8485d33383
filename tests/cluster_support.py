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
def arrivals(host: str, ports: dict[str, int]):
    """iptables counters in a host's namespace, of packets arriving from another host at each named
    port: how the host's instances were reached. Yields a function that reads them."""
    own = address(host)
    in_host(host, "iptables", "-N", "ARRIVALS")
    in_host(host, "iptables", "-I", "INPUT", "-j", "ARRIVALS")
    for name, port in ports.items():
        in_host(host, "iptables", "-A", "ARRIVALS", "!", "-s", own, "-p", "tcp", "--dport", str(port),
                "-m", "comment", "--comment", name)

    def read() -> dict[str, int]:
        listed = in_host(host, "iptables", "-L", "ARRIVALS", "-v", "-n", "-x").stdout.splitlines()[2:]
        return {line.split("/* ")[1].split(" */")[0]: int(line.split()[0]) for line in listed}
    try:
        yield read
    finally:
        in_host(host, "iptables", "-D", "INPUT", "-j", "ARRIVALS")
        in_host(host, "iptables", "-F", "ARRIVALS")
        in_host(host, "iptables", "-X", "ARRIVALS")
