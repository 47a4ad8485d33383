"""`meshspec serve mcp-task-runner`: a task-runner MCP server (the mesh's `claude-task-runner` service).

Written with the official ``mcp`` SDK (``MCPServer``), served over Streamable HTTP at ``/mcp`` with
stateful sessions. A task is one command run as a subprocess: an argv list executed directly, never
through a shell, and only when its program is one the server was started to allow (`--allow
PROGRAM`, matched exactly as written: `echo` does not allow `/tmp/x/echo`); none is allowed by
default. Tasks never run as root: a runner started as root runs each task as `--task-user` (its
uid, its groups, its home, a PATH of the system's), and refuses to start without one unless
`--allow-root` says the operator means it. Tools:

- ``submit_task(command, timeout_s=60, cwd=None)`` → ``{task_id, state}``; the task is queued and
  starts as soon as fewer than ``max_concurrent`` tasks run;
- ``task_status(task_id)`` → state (``queued``, ``running``, ``succeeded``, ``failed``,
  ``timed_out``, ``cancelled``), exit code, reason, pid, timestamps (ISO 8601, UTC);
- ``task_output(task_id, tail_bytes=65536)`` → the last bytes of stdout and stderr;
- ``list_tasks(state=None, limit=100)`` → newest first;
- ``cancel_task(task_id)`` → a queued task is cancelled at once; a running one gets SIGTERM (its
  whole process group), then SIGKILL after ``KILL_GRACE_S``.

State lives under ``--data-dir``: ``tasks.sqlite3`` (one row per task) and ``output/<id>.stdout``,
``output/<id>.stderr``. Status and output survive a restart; a task that was queued or running when
the server stopped is marked ``failed`` with the reason ``server restarted ...`` at the next start
(its process, in its own process group, is sent SIGKILL if it is still alive).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import shutil
import signal
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from meshspec.runtime.services.mcp_headers import HeadersMatchBody

log = logging.getLogger("meshspec.task_runner")

STATES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled")
FINAL_STATES = ("succeeded", "failed", "timed_out", "cancelled")
MAX_TIMEOUT_S = 24 * 3600.0
TASK_PATH = "/usr/local/bin:/usr/bin:/bin"  # where a task user's programs are found
DEFAULT_TAIL_BYTES = 64 * 1024
MAX_TAIL_BYTES = 1024 * 1024
#: Seconds between SIGTERM and SIGKILL when a task is cancelled or times out.
KILL_GRACE_S = 3.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id          TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    command     TEXT NOT NULL,   -- JSON argv
    cwd         TEXT,
    timeout_s   REAL NOT NULL,
    state       TEXT NOT NULL,
    exit_code   INTEGER,
    reason      TEXT,
    pid         INTEGER,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS tasks_seq ON tasks (seq);
"""


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


class TaskStore:
    """The SQLite table of tasks and the output files; every method is short and synchronous."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.output_dir = data_dir / "output"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(data_dir / "tasks.sqlite3", isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def recover(self) -> int:
        """Mark tasks left queued or running by a previous process as failed; kill orphans. Returns how many."""
        rows = self.db.execute("SELECT id, state, pid FROM tasks WHERE state IN ('queued', 'running')").fetchall()
        now = time.time()
        for row in rows:
            if row["state"] == "running":
                reason = "server restarted while the task was running"
                if row["pid"]:
                    _kill_group(row["pid"], signal.SIGKILL)
            else:
                reason = "server restarted before the task started"
            self.db.execute("UPDATE tasks SET state='failed', reason=?, finished_at=? WHERE id=?", (reason, now, row["id"]))
        return len(rows)

    def add(self, command: list[str], cwd: str | None, timeout_s: float) -> str:
        task_id = uuid.uuid4().hex[:16]
        seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks").fetchone()[0]
        self.db.execute(
            "INSERT INTO tasks (id, seq, command, cwd, timeout_s, state, created_at) VALUES (?, ?, ?, ?, ?, 'queued', ?)",
            (task_id, seq, json.dumps(command), cwd, timeout_s, time.time()))
        return task_id

    def update(self, task_id: str, **fields: Any) -> None:
        names = ", ".join(f"{name}=?" for name in fields)
        self.db.execute(f"UPDATE tasks SET {names} WHERE id=?", (*fields.values(), task_id))

    def finish(self, task_id: str, state: str, exit_code: int | None, reason: str | None) -> None:
        """Record the end of a task unless it already ended (e.g. cancelled while queued)."""
        self.db.execute("UPDATE tasks SET state=?, exit_code=?, reason=?, finished_at=? "
                        "WHERE id=? AND state IN ('queued', 'running')",
                        (state, exit_code, reason, time.time(), task_id))

    def get(self, task_id: str) -> dict[str, Any]:
        row = self.db.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
        if row is None:
            raise ToolError(f"no task {task_id!r}")
        return _describe(row)

    def list(self, state: str | None, limit: int) -> list[dict[str, Any]]:
        if state is None:
            rows = self.db.execute("SELECT * FROM tasks ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self.db.execute("SELECT * FROM tasks WHERE state=? ORDER BY seq DESC LIMIT ?", (state, limit))
        return [_describe(row) for row in rows]

    def output_path(self, task_id: str, stream: str) -> Path:
        return self.output_dir / f"{task_id}.{stream}"


def _describe(row: sqlite3.Row) -> dict[str, Any]:
    started, finished = row["started_at"], row["finished_at"]
    duration = None
    if started is not None:
        duration = round(((finished if finished is not None else time.time()) - started) * 1000, 1)
    return {
        "task_id": row["id"],
        "command": json.loads(row["command"]),
        "cwd": row["cwd"],
        "timeout_s": row["timeout_s"],
        "state": row["state"],
        "exit_code": row["exit_code"],
        "reason": row["reason"],
        "pid": row["pid"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_ms": duration,
    }


def _kill_group(pid: int, sig: int) -> None:
    """Signal the task's process group (each task leads its own session)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class TaskRunner:
    """Runs tasks as subprocesses in the server's event loop, at most ``max_concurrent`` at once."""

    def __init__(self, store: TaskStore, max_concurrent: int, allowed: frozenset[str] = frozenset(),
                 task_user: pwd.struct_passwd | None = None) -> None:
        self.store = store
        self.max_concurrent = max_concurrent
        self.allowed = allowed
        self.task_user = task_user
        self._slots: asyncio.Semaphore | None = None
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._cancelled: set[str] = set()

    def submit(self, command: list[str], timeout_s: float, cwd: str | None) -> str:
        if not command or not all(isinstance(arg, str) for arg in command) or not command[0]:
            raise ToolError("command must be a non-empty list of strings (argv; no shell)")
        if command[0] not in self.allowed:
            log.warning("refused a task running %r: not in the allow-list", command[0])
            runs = ", ".join(sorted(self.allowed)) if self.allowed else "nothing (it was started without --allow)"
            raise ToolError(f"command {command[0]!r} is not allowed: this runner runs only {runs}")
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise ToolError(f"timeout_s must be more than 0 and at most {MAX_TIMEOUT_S:g}")
        if cwd is not None and not Path(cwd).is_dir():
            raise ToolError(f"cwd {cwd!r} is not a directory")
        search = TASK_PATH if self.task_user else os.environ.get("PATH")
        if shutil.which(command[0], path=None if os.sep in command[0] else search) is None:
            where = "is not an executable file" if os.sep in command[0] else "is not found on PATH"
            raise ToolError(f"command {command[0]!r} {where}")
        task_id = self.store.add(command, cwd, timeout_s)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        job = asyncio.get_running_loop().create_task(self._run(task_id, command, timeout_s, cwd))
        self._jobs[task_id] = job
        job.add_done_callback(lambda _: self._jobs.pop(task_id, None))
        return task_id

    async def _run(self, task_id: str, command: list[str], timeout_s: float, cwd: str | None) -> None:
        assert self._slots is not None
        try:
            async with self._slots:
                if task_id in self._cancelled:
                    return
                await self._execute(task_id, command, timeout_s, cwd)
        except Exception as err:  # never lose a task silently
            log.exception("task %s failed inside the runner", task_id)
            self.store.finish(task_id, "failed", None, f"runner error: {type(err).__name__}: {err}")
        finally:
            self._cancelled.discard(task_id)

    def _as_task_user(self) -> dict[str, Any]:
        """What makes a task run as the task user: its ids and groups, and an environment of its own
        (nothing of the runner's, whose variables may name files only the runner may read)."""
        user = self.task_user
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid),
                "env": {"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name, "PATH": TASK_PATH}}

    async def _execute(self, task_id: str, command: list[str], timeout_s: float, cwd: str | None) -> None:
        stdout = open(self.store.output_path(task_id, "stdout"), "wb")
        stderr = open(self.store.output_path(task_id, "stderr"), "wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                start_new_session=True, **self._as_task_user())
        except OSError as err:
            self.store.finish(task_id, "failed", None, f"cannot start: {err.strerror or err}")
            return
        finally:
            stdout.close()
            stderr.close()
        self._procs[task_id] = proc
        self.store.update(task_id, state="running", pid=proc.pid, started_at=time.time())
        try:
            try:
                code = await asyncio.wait_for(proc.wait(), timeout_s)
            except asyncio.TimeoutError:
                await self._stop(proc)
                self.store.finish(task_id, "timed_out", proc.returncode,
                                  f"killed after the {timeout_s:g} s timeout")
                return
            if task_id in self._cancelled:
                self.store.finish(task_id, "cancelled", code, "cancelled by cancel_task")
            elif code == 0:
                self.store.finish(task_id, "succeeded", 0, None)
            else:
                reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                self.store.finish(task_id, "failed", code, reason)
        finally:
            self._procs.pop(task_id, None)
            if proc.returncode is None:  # the server is shutting down: do not leave the task behind
                _kill_group(proc.pid, signal.SIGKILL)

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the process group; SIGKILL it after the grace period."""
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
        except asyncio.TimeoutError:
            _kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def cancel(self, task_id: str) -> dict[str, Any]:
        task = self.store.get(task_id)
        if task["state"] in FINAL_STATES:
            return {**task, "cancelled": False, "message": f"task already {task['state']}"}
        self._cancelled.add(task_id)
        proc = self._procs.get(task_id)
        if proc is None:  # still queued (or not started by this process)
            self.store.finish(task_id, "cancelled", None, "cancelled before it started")
        else:
            await self._stop(proc)
            job = self._jobs.get(task_id)
            if job is not None:
                await asyncio.wait({job}, timeout=KILL_GRACE_S)
        return {**self.store.get(task_id), "cancelled": True}

    def output(self, task_id: str, tail_bytes: int) -> dict[str, Any]:
        task = self.store.get(task_id)
        if not 0 < tail_bytes <= MAX_TAIL_BYTES:
            raise ToolError(f"tail_bytes must be more than 0 and at most {MAX_TAIL_BYTES}")
        result: dict[str, Any] = {"task_id": task_id, "state": task["state"], "exit_code": task["exit_code"]}
        for stream in ("stdout", "stderr"):
            text, size = _tail(self.store.output_path(task_id, stream), tail_bytes)
            result[stream] = text
            result[f"{stream}_bytes"] = size
            result[f"{stream}_truncated"] = size > tail_bytes
        return result


def _tail(path: Path, limit: int) -> tuple[str, int]:
    """The last ``limit`` bytes of ``path`` as text (invalid UTF-8 replaced) and the file's size."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - limit))
            return handle.read(limit).decode("utf-8", "replace"), size
    except FileNotFoundError:
        return "", 0


def build_server(data_dir: Path, max_concurrent: int = 4, allowed: frozenset[str] = frozenset(),
                 task_user: pwd.struct_passwd | None = None) -> tuple[MCPServer, TaskRunner]:
    """The MCP server and its runner; tasks left behind by a previous process are marked failed."""
    if max_concurrent < 1:
        raise ValueError("max_concurrent must be at least 1")
    data_dir.mkdir(parents=True, exist_ok=True)
    store = TaskStore(data_dir)
    recovered = store.recover()
    if recovered:
        log.warning("marked %d task(s) left by a previous run as failed", recovered)
    runner = TaskRunner(store, max_concurrent, allowed, task_user)
    server = MCPServer(
        "meshspec-task-runner",
        version="1",
        instructions="Run commands as background tasks: submit_task, then task_status / task_output.",
        log_level="WARNING",
    )

    @server.tool()
    async def submit_task(
        command: Annotated[list[str], Field(description="argv: the program and its arguments; never run by a shell.",
                                            min_length=1)],
        timeout_s: Annotated[float, Field(description="Seconds before the task is killed (state timed_out).")] = 60.0,
        cwd: Annotated[str | None, Field(description="Working directory; the server's when omitted.")] = None,
    ) -> dict[str, Any]:
        """Queue a command to run as a subprocess; returns its task_id at once."""
        task_id = runner.submit(command, timeout_s, cwd)
        return {"task_id": task_id, "state": store.get(task_id)["state"]}

    @server.tool()
    async def task_status(task_id: str) -> dict[str, Any]:
        """State (queued, running, succeeded, failed, timed_out, cancelled), exit code, reason and timestamps of a task."""
        return store.get(task_id)

    @server.tool()
    async def task_output(
        task_id: str,
        tail_bytes: Annotated[int, Field(description=f"Bytes from the end of each stream (≤ {MAX_TAIL_BYTES}).")]
        = DEFAULT_TAIL_BYTES,
    ) -> dict[str, Any]:
        """The last bytes of a task's stdout and stderr (also while it runs)."""
        return runner.output(task_id, tail_bytes)

    @server.tool()
    async def list_tasks(
        state: Annotated[str | None, Field(description="Only tasks in this state.")] = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Tasks, newest first, with their status."""
        if state is not None and state not in STATES:
            raise ToolError(f"unknown state {state!r}: use one of {', '.join(STATES)}")
        tasks = store.list(state, limit)
        return {"tasks": tasks, "count": len(tasks)}

    @server.tool()
    async def cancel_task(task_id: str) -> dict[str, Any]:
        """Cancel a queued task, or stop a running one (SIGTERM, then SIGKILL); returns its status."""
        return await runner.cancel(task_id)

    return server, runner


def mcp_task_runner_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Where the task database and outputs live.")] = Path("."),
    max_concurrent: Annotated[int, typer.Option(min=1, help="Tasks running at once; the rest wait queued.")] = 4,
    allow: Annotated[list[str] | None, typer.Option(
        "--allow", help="A program tasks may run, exactly as a task names it (repeat it); none by default.")] = None,
    task_user: Annotated[str | None, typer.Option(help="Run every task as this user (when the runner is root).")] = None,
    allow_root: Annotated[bool, typer.Option(help="Run tasks as root when the runner is root and no --task-user "
                                                  "is given.")] = False,
) -> None:
    """Serve the task-runner MCP server on http://HOST:PORT/mcp (Streamable HTTP, stateful)."""
    user = None
    if task_user is not None:
        try:
            user = pwd.getpwnam(task_user)
        except KeyError:
            typer.echo(f"mcp-task-runner: --task-user {task_user}: no such user", err=True)
            raise typer.Exit(1) from None
        if user.pw_uid == 0:
            typer.echo(f"mcp-task-runner: --task-user {task_user} is root", err=True)
            raise typer.Exit(1)
    elif os.geteuid() == 0 and not allow_root:
        typer.echo("mcp-task-runner: refusing to run tasks as root: give --task-user USER (or run the runner as an "
                   "unprivileged user), or --allow-root", err=True)
        raise typer.Exit(1)
    server, runner = build_server(data_dir, max_concurrent, frozenset(allow or ()), user)
    try:
        app = HeadersMatchBody(server.streamable_http_app(streamable_http_path="/mcp", host=host))
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        runner.store.close()


if __name__ == "__main__":  # pragma: no cover
    typer.run(mcp_task_runner_command)
