"""meshspec-reaper ends the descendants that escaped the program's process group.

Stopped as supervisord stops a program (SIGTERM to its process group), a command whose child
runs in a session of its own leaves that child behind; under the reaper it does not.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import wait_until

REAPER = str(Path(sys.executable).parent / "meshspec-reaper")
# A program that starts a child in a new session (as mcp-proxy does), prints its pid, and waits.
ESCAPING = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def stop_like_supervisord(argv: list[str]) -> int:
    """Start `argv` in its own group, stop it with SIGTERM to the group; the escaped child's pid."""
    program = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    escaped = int(program.stdout.readline())
    os.killpg(program.pid, signal.SIGTERM)
    program.wait(timeout=15)
    return escaped


def test_without_the_reaper_the_escaped_child_outlives_the_program():
    escaped = stop_like_supervisord([sys.executable, "-c", ESCAPING])
    try:
        time.sleep(0.5)
        assert alive(escaped)
    finally:
        os.kill(escaped, signal.SIGKILL)


def test_under_the_reaper_the_escaped_child_is_ended_with_the_program():
    escaped = stop_like_supervisord([REAPER, "--", sys.executable, "-c", ESCAPING])
    wait_until(lambda: not alive(escaped), timeout=10, what="the escaped child ended")


@pytest.mark.parametrize("argv", [[], ["--"]])
def test_a_reaper_without_a_command_says_how_to_use_it(argv):
    result = subprocess.run([REAPER, *argv], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: meshspec-reaper -- COMMAND" in result.stderr
