"""Small helpers every test package uses: free ports, polling, listening checks, a supervisord."""

from __future__ import annotations

import socket
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 15, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test with its last value otherwise."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout}s (last value: {value!r})")


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def supervisord_conf(root: Path, programs: str) -> Path:
    """A supervisord of its own in `root` (its socket `root/supervisor.sock`) running `programs`
    (`[program:...]` sections): the file to start it with."""
    conf = root / "supervisord.conf"
    conf.write_text(f"""[unix_http_server]
file={root}/supervisor.sock
[supervisord]
logfile={root}/supervisord.log
pidfile={root}/supervisord.pid
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{root}/supervisor.sock
{programs}""")
    return conf
