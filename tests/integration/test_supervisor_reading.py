"""facts/supervisor.Programs, the deploy's reading of a host's supervisord (curl on its XML-RPC
socket), against a real supervisord: each program's state, a running one's seconds since its start,
and None where no supervisord answers (the deploy then starts one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from meshspec.converge.facts.supervisor import Programs
from tests.support import supervisord_conf, wait_until

BIN = Path(sys.executable).parent


def read(socket: str):
    fact = Programs()
    done = subprocess.run(["sh", "-c", fact.command(socket=socket)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr  # as pyinfra needs it: a missing answer is a value, not a failure
    return fact.process(done.stdout.splitlines())


@pytest.fixture(scope="module")
def supervisord(tmp_path_factory):
    root = tmp_path_factory.mktemp("supervisor")
    conf = supervisord_conf(root, """[program:sleeper]
command=sleep 600
startsecs=1
[program:idle]
command=sleep 600
autostart=false
[program:crasher]
command=false
startsecs=1
startretries=0
""")
    subprocess.run([str(BIN / "supervisord"), "-c", str(conf)], check=True, timeout=30)
    try:
        yield str(root / "supervisor.sock")
    finally:
        subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), "shutdown"], capture_output=True, timeout=60)


def test_each_program_s_state_and_a_running_one_s_uptime(supervisord):
    wait_until(lambda: (read(supervisord) or {}).get("sleeper", (None,))[0] == "RUNNING"
               and read(supervisord)["crasher"].state == "FATAL", 20, what="sleeper RUNNING, crasher FATAL")
    time_before = read(supervisord)["sleeper"].uptime
    wait_until(lambda: read(supervisord)["sleeper"].uptime > time_before, 5, what="the uptime to grow")
    programs = read(supervisord)
    assert {name: p.state for name, p in programs.items()} == {"sleeper": "RUNNING", "idle": "STOPPED", "crasher": "FATAL"}
    assert programs["sleeper"].uptime >= 1 and programs["idle"].uptime == programs["crasher"].uptime == 0


def test_no_supervisord_is_none(tmp_path):
    assert read(str(tmp_path / "supervisor.sock")) is None
    (tmp_path / "plain.sock").write_text("not a socket")
    assert read(str(tmp_path / "plain.sock")) is None
