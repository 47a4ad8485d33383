"""`meshspec serve mcp-task-runner` as a subprocess, driven by the official MCP client."""

from __future__ import annotations

import os
import pwd
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from meshspec.runtime.probes.mcp import probe_mcp
from tests.agent.conftest import wait_until
from tests.services.mcp_support import TASK_RUNNER_ARGS, ServerProcess, call, start_mcp_server, structured, text_of  # noqa: F401

pytestmark = pytest.mark.integration

PY = "python3"
MESHSPEC = Path(sys.executable).parent / "meshspec"


def submit(server: ServerProcess, code: str, **extra) -> str:
    answer = structured(call(server.url, "submit_task", {"command": [PY, "-c", code], **extra}))
    assert answer["state"] in ("queued", "running")
    return answer["task_id"]


def status(server: ServerProcess, task_id: str) -> dict:
    return structured(call(server.url, "task_status", {"task_id": task_id}))


def wait_state(server: ServerProcess, task_id: str, *states: str, timeout: float = 15.0) -> dict:
    return wait_until(lambda: (s := status(server, task_id))["state"] in states and s, timeout, interval=0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie not yet reaped by its (dead) parent's reaper counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> ServerProcess:
    """One server for the module (tests leave no task running); max_concurrent 2."""
    logs = tmp_path_factory.mktemp("task-runner")
    proc = ServerProcess("mcp-task-runner", logs, ["--data-dir", str(logs / "data"), "--max-concurrent", "2", *TASK_RUNNER_ARGS]).start()
    yield proc
    proc.stop()


def test_handshake_lists_the_five_tools(runner):
    result = probe_mcp(runner.url)
    assert result.ok, result.reason
    assert set(result.tools) == {"submit_task", "task_status", "task_output", "list_tasks", "cancel_task"}


def test_task_runs_through_running_to_succeeded_with_output(runner):
    task_id = submit(runner, "import sys, time; print('out line'); print('err line', file=sys.stderr); "
                             "sys.stdout.flush(); time.sleep(1.0)")
    running = wait_state(runner, task_id, "running")
    assert running["pid"] and running["started_at"] and running["finished_at"] is None
    done = wait_state(runner, task_id, "succeeded")
    assert done["exit_code"] == 0 and done["reason"] is None
    created, started, finished = (datetime.fromisoformat(done[k]) for k in ("created_at", "started_at", "finished_at"))
    assert created <= started < finished
    assert done["duration_ms"] >= 900
    output = structured(call(runner.url, "task_output", {"task_id": task_id}))
    assert output["stdout"] == "out line\n"
    assert output["stderr"] == "err line\n"
    assert output["stdout_truncated"] is False


def test_failure_exit_code_and_tail(runner):
    task_id = submit(runner, "import sys; print('x' * 5000); sys.exit(3)")
    done = wait_state(runner, task_id, "failed")
    assert (done["exit_code"], done["reason"]) == (3, "exited with code 3")
    tail = structured(call(runner.url, "task_output", {"task_id": task_id, "tail_bytes": 10}))
    assert tail["stdout"] == "xxxxxxxxx\n"
    assert tail["stdout_bytes"] == 5001 and tail["stdout_truncated"] is True


def test_argv_is_never_given_to_a_shell(runner, tmp_path: Path):
    marker = tmp_path / "pwned"
    answer = structured(call(runner.url, "submit_task", {"command": ["echo", f"$HOME; touch {marker}"],
                                                          "cwd": str(tmp_path)}))
    wait_state(runner, answer["task_id"], "succeeded")
    output = structured(call(runner.url, "task_output", {"task_id": answer["task_id"]}))
    assert output["stdout"] == f"$HOME; touch {marker}\n"
    assert not marker.exists()


def test_cwd_is_honoured(runner, tmp_path: Path):
    task_id = submit(runner, "import os; print(os.getcwd())", cwd=str(tmp_path))
    wait_state(runner, task_id, "succeeded")
    assert structured(call(runner.url, "task_output", {"task_id": task_id}))["stdout"].strip() == str(tmp_path)


def test_timeout_kills_the_task(runner):
    task_id = submit(runner, "import time; time.sleep(30)", timeout_s=0.5)
    done = wait_state(runner, task_id, "timed_out", timeout=10)
    assert done["reason"] == "killed after the 0.5 s timeout"
    assert not alive(done["pid"])


def test_cancel_running_and_queued(runner):
    # max_concurrent is 2: two sleepers run, the third waits queued
    running = [submit(runner, "import time; time.sleep(30)") for _ in range(2)]
    queued = submit(runner, "print('never')")
    for task_id in running:
        wait_state(runner, task_id, "running")
    assert status(runner, queued)["state"] == "queued"

    cancelled = structured(call(runner.url, "cancel_task", {"task_id": queued}))
    assert cancelled["cancelled"] is True and cancelled["state"] == "cancelled"
    assert cancelled["reason"] == "cancelled before it started"

    stopped = structured(call(runner.url, "cancel_task", {"task_id": running[0]}))
    assert stopped["state"] == "cancelled" and stopped["exit_code"] == -signal.SIGTERM
    assert not alive(stopped["pid"])
    again = structured(call(runner.url, "cancel_task", {"task_id": running[0]}))
    assert again["cancelled"] is False and "already cancelled" in again["message"]
    structured(call(runner.url, "cancel_task", {"task_id": running[1]}))
    # the queued task never ran, even though a slot freed up
    assert status(runner, queued)["started_at"] is None


def test_list_tasks_newest_first_and_by_state(runner):
    ids = [submit(runner, f"print({n})") for n in range(3)]
    for task_id in ids:
        wait_state(runner, task_id, "succeeded")
    listed = structured(call(runner.url, "list_tasks", {"limit": 3}))
    assert [t["task_id"] for t in listed["tasks"]] == ids[::-1]
    succeeded = structured(call(runner.url, "list_tasks", {"state": "succeeded"}))["tasks"]
    assert {t["state"] for t in succeeded} == {"succeeded"} and set(ids) <= {t["task_id"] for t in succeeded}


@pytest.mark.parametrize("arguments, message", [
    ({"command": []}, "command"),
    ({"command": ["definitely-not-a-program-xyz"]}, "is not found on PATH"),
    ({"command": ["/nonexistent/bin/tool"]}, "is not an executable file"),
    ({"command": ["true"], "cwd": "/nonexistent-dir"}, "is not a directory"),
    ({"command": ["true"], "timeout_s": -1}, "timeout_s must be more than 0"),
    ({"command": ["rm", "-rf", "/tmp/x"]}, "command 'rm' is not allowed: this runner runs only"),
    ({"command": ["/usr/bin/true"]}, "command '/usr/bin/true' is not allowed"),  # as written, not resolved
])
def test_bad_submissions_are_tool_errors(runner, arguments, message):
    result = call(runner.url, "submit_task", arguments)
    assert result.is_error and message in text_of(result)


def test_unknown_task_is_a_tool_error(runner):
    result = call(runner.url, "task_status", {"task_id": "nope"})
    assert result.is_error and "no task 'nope'" in text_of(result)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_keeps_history_and_fails_interrupted_tasks(start_mcp_server, tmp_path: Path, sig):
    data = tmp_path / "runner"
    first = start_mcp_server("mcp-task-runner", ["--data-dir", str(data), "--max-concurrent", "1", *TASK_RUNNER_ARGS])
    finished = submit(first, "print('kept')")
    wait_state(first, finished, "succeeded")
    interrupted = submit(first, "import time; time.sleep(60)")
    pid = wait_state(first, interrupted, "running")["pid"]
    queued = submit(first, "print('never')")
    first.stop(sig)

    second = start_mcp_server("mcp-task-runner", ["--data-dir", str(data), *TASK_RUNNER_ARGS], port=first.port)
    kept = status(second, finished)
    assert (kept["state"], kept["exit_code"]) == ("succeeded", 0)
    assert structured(call(second.url, "task_output", {"task_id": finished}))["stdout"] == "kept\n"
    lost = status(second, interrupted)
    assert lost["state"] == "failed" and lost["reason"] == "server restarted while the task was running"
    assert status(second, queued)["reason"] == "server restarted before the task started"
    wait_until(lambda: not alive(pid), 5)
    # the database is a plain SQLite file under --data-dir
    with sqlite3.connect(data / "tasks.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 3
    # and the restarted server runs new tasks
    wait_state(second, submit(second, "print(1)"), "succeeded")


def test_a_root_runner_without_a_task_user_does_not_start(tmp_path: Path):
    for extra, message in (([], "refusing to run tasks as root"), (["--task-user", "root"], "is root"),
                           (["--task-user", "no-such-user-xyz"], "no such user")):
        refused = subprocess.run([str(MESHSPEC), "serve", "mcp-task-runner", "--data-dir", str(tmp_path), *extra],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr


def test_tasks_run_as_the_task_user(start_mcp_server, tmp_path: Path):
    """A root runner given --task-user runs each task with that user's ids, groups and home."""
    runner = start_mcp_server("mcp-task-runner", ["--data-dir", str(tmp_path / "as-user"), "--task-user", "nobody",
                                                  "--allow", "id", "--allow", "sh"])
    task = submit_as(runner, ["id", "-u"])
    assert structured(call(runner.url, "task_output", {"task_id": task}))["stdout"] == f"{pwd.getpwnam('nobody').pw_uid}\n"
    task = submit_as(runner, ["sh", "-c", "echo $HOME; touch /root/owned-by-a-task"])
    assert structured(call(runner.url, "task_output", {"task_id": task}))["stdout"] == f"{pwd.getpwnam('nobody').pw_dir}\n"
    assert not Path("/root/owned-by-a-task").exists()


def submit_as(runner: ServerProcess, command: list[str]) -> str:
    task_id = structured(call(runner.url, "submit_task", {"command": command}))["task_id"]
    wait_until(lambda: status(runner, task_id)["state"] in ("succeeded", "failed"), 15, interval=0.1)
    return task_id


def test_without_an_allow_list_nothing_runs(start_mcp_server, tmp_path: Path):
    bare = start_mcp_server("mcp-task-runner", ["--data-dir", str(tmp_path / "bare"), "--allow-root"])
    result = call(bare.url, "submit_task", {"command": ["true"]})
    assert result.is_error and "runs only nothing (it was started without --allow)" in text_of(result)
    assert structured(call(bare.url, "list_tasks", {}))["count"] == 0
