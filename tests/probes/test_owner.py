"""Who answered: a probe passes only when the instance's own process holds its port. Against a real
supervisord: its program answering passes and is named; the seed's liar on the port, answering
HTTP 200 to anything, fails every probe kind and is named by pid and command."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshspec.render.probes import HTTP, MCP, REDIS, TCP, Probe
from meshspec.runtime.probes.owner import Listeners, Owner, Tracker, tree
from meshspec.runtime.probes.protocols import run
from meshspec.spec.models import RedisProbe
from tests.probes.conftest import LIE
from tests.support import free_port, supervisord_conf, wait_until

BIN = Path(sys.executable).parent
PROGRAM = "web-local-0"
LIAR = f"""
import socket
server = socket.create_server(("127.0.0.1", PORT))
while True:
    conn, _ = server.accept()
    with conn:
        conn.recv(65536)
        conn.sendall({LIE!r})
"""


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    """A supervisord running PROGRAM: Python's http.server on a free port."""
    root = tmp_path_factory.mktemp("owner")
    port = free_port()
    conf = supervisord_conf(root, f"""[program:{PROGRAM}]
command={sys.executable} -m http.server --bind 127.0.0.1 {port}
directory={root}
startsecs=1
""")
    subprocess.run([str(BIN / "supervisord"), "-c", str(conf)], check=True, timeout=30)
    ctl = [str(BIN / "supervisorctl"), "-c", str(conf)]
    try:
        wait_until(lambda: "RUNNING" in subprocess.run([*ctl, "status", PROGRAM], capture_output=True, text=True).stdout,
                   15, what=f"{PROGRAM} RUNNING")
        yield Owner("127.0.0.1", port, program=PROGRAM, supervisor_socket=f"{root}/supervisor.sock"), ctl
    finally:
        subprocess.run([*ctl, "shutdown"], capture_output=True, timeout=60)


def http_probe(owner: Owner) -> dict:
    return dataclasses.asdict(Probe(HTTP, url=f"http://127.0.0.1:{owner.port}/", owner=dataclasses.asdict(owner)))


def test_the_program_that_holds_its_port_passes_and_is_named(supervised):
    owner, _ = supervised
    result = run(http_probe(owner), timeout=5)
    assert result.ok, result.output
    assert result.output.endswith(f"; held by pid {result.details['pid']} of program {PROGRAM}"), result.output


def test_a_tracker_remembers_the_tree_and_follows_a_restart(supervised):
    owner, ctl = supervised
    tracker = Tracker(owner)
    first = tracker.check()
    assert first.ok, first.reason
    subprocess.run([*ctl, "restart", PROGRAM], check=True, capture_output=True, timeout=60)
    wait_until(lambda: tracker.check().ok and tracker.check().pid != first.pid, 15, what="the restarted program")


def test_a_tracker_given_a_wrong_root_asks_supervisord_and_names_the_program(supervised):
    owner, _ = supervised
    verdict = Tracker(owner, root=os.getpid()).check()  # this test's process holds no such port
    assert verdict.ok and verdict.pid != os.getpid(), verdict.reason


def test_the_listeners_table_has_each_listening_socket_by_address_and_inode():
    with socket.create_server(("127.0.0.1", 0)) as v4, \
            socket.create_server(("::1", 0), family=socket.AF_INET6) as v6, \
            socket.create_connection(v4.getsockname()):  # a connected socket is not a listener
        table = Listeners()
        assert table.inodes("127.0.0.1", v4.getsockname()[1]) == {os.fstat(v4.fileno()).st_ino}
        assert table._snapshot(False)[("::1", v6.getsockname()[1])] == {os.fstat(v6.fileno()).st_ino}
        assert table.inodes("127.0.0.2", v4.getsockname()[1]) == set()


def test_a_tree_is_the_root_and_every_descendant():
    # python -> sh -> two sleeps: children and grandchildren
    nested = subprocess.Popen([sys.executable, "-c", "import subprocess; subprocess.run(['sh', '-c', 'sleep 30 & sleep 30; wait'])"])

    def parent(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])

    try:
        wait_until(lambda: len(tree(nested.pid)) == 4, 10, what="the shell and its two sleeps started")
        found = tree(nested.pid)
        assert found[0] == nested.pid
        assert [parent(pid) for pid in found[1:]] == [nested.pid, found[1], found[1]]
    finally:
        for pid in reversed(tree(nested.pid)[1:]):
            os.kill(pid, 9)
        nested.kill()
        nested.wait()


@pytest.mark.parametrize("kind", [HTTP, MCP, TCP, REDIS])
def test_the_liar_on_the_port_fails_every_probe_kind_and_is_named(supervised, kind):
    owner, ctl = supervised
    subprocess.run([*ctl, "stop", PROGRAM], check=True, capture_output=True, timeout=60)
    liar = subprocess.Popen([sys.executable, "-c", LIAR.replace("PORT", str(owner.port))])
    try:
        wait_until(lambda: Tracker(owner).check().pid == liar.pid, 10, what="the liar listening")
        base = {"owner": dataclasses.asdict(owner)}
        probe = {
            HTTP: Probe(HTTP, url=f"http://127.0.0.1:{owner.port}/health", **base),
            MCP: Probe(MCP, url=f"http://127.0.0.1:{owner.port}/mcp", min_tools=1, **base),
            TCP: Probe(TCP, address="127.0.0.1", port=owner.port, **base),
            REDIS: Probe(REDIS, address="127.0.0.1", port=owner.port, options=RedisProbe().model_dump(), **base),
        }[kind]
        result = run(dataclasses.asdict(probe), timeout=3)
        assert not result.ok, result.output
        held = f"127.0.0.1:{owner.port} is held by pid {liar.pid} ({Path(sys.executable).name} -c"
        assert result.output.startswith(held) and f"not by program {PROGRAM} (program {PROGRAM} is STOPPED)" in result.output, \
            result.output
        assert "\n" not in result.output
    finally:
        liar.kill()
        liar.wait()
        subprocess.run([*ctl, "start", PROGRAM], capture_output=True, timeout=60)
        time.sleep(0.2)
