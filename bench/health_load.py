"""Health under load: idle CPU, check flaps under a CPU hog and resident memory of a deployed mesh.

Reads the running mesh of the current settings (MESH_STATE_DIR, MESH_PORT_OFFSET, MESH_SPEC,
MESH_RUNTIME), as bench/workloads.py does, and measures side by side in one run:
  1. idle CPU: cores used by the whole machine and by the mesh's processes over --idle-seconds;
  2. resident memory: RSS and PSS summed over the mesh's process trees;
  3. flaps: checks that go from passing to warning or critical while one busy loop per core runs
     for --hog-seconds, and in the 30 s after.
Goals: idle CPU <= 0.10 core, 0 flaps under the hog, memory <= 4 GiB. A benchmark, not a test:
exit 0 whenever it measured, whatever the figures; 2 when it could not (no mesh answers).

    MESH_STATE_DIR=/tmp/meshspec-test MESH_PORT_OFFSET=20000 .venv/bin/python bench/health_load.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from meshspec import settings
from meshspec.common.consul_token import read_token
from meshspec.converge.mesh import BIN_DIR, Mesh, configured_mesh
from meshspec.plan import Runtime
from meshspec.plan.hosts import LOCAL, HostsError
from meshspec.plan.layout import Layout
from meshspec.spec import SpecInvalid

USER_HZ = os.sysconf("SC_CLK_TCK")
GiB = 1024**3
MiB = 1024**2
TOP = 8
PROGRESS_EVERY = 15.0  # seconds between progress lines, so a CI log shows the run is alive
AFTER_HOG_SECONDS = 30.0  # checks are still watched this long after the hogs end: a late flap is still a flap
WAIT_SECONDS = 5.0  # blocking-query wait: short, so a registry that stops answering shows within seconds
WAIT = f"{WAIT_SECONDS:.0f}s"
LATE_AFTER = 1.0  # an answer later than this past its due time (Consul's wait + wait/16 of jitter) was overdue
HTTP_TIMEOUT = 15.0  # the wait, its jitter, and room for an agent slowed by the hog
GOAL_IDLE_CORES, GOAL_FLAPS, GOAL_MEMORY_GIB = 0.10, 0, 4.0
PASSING = "passing"
# One busy loop per core, `while True: pass` behind two lines that make it die with this bench:
# PR_SET_PDEATHSIG (prctl option 1) asks the kernel for a SIGKILL when the bench dies, even by SIGKILL,
# and the ppid test covers a bench that died before the prctl.
HOG = "\n".join([
    "import ctypes, os, sys",
    "ctypes.CDLL(None).prctl(1, 9)",
    "if os.getppid() != int(sys.argv[1]): sys.exit()",
    "while True: pass",
])


class CannotMeasure(Exception):
    """Why the bench could not measure: printed as one line, exit 2."""


# ---------------------------------------------------------------- processes, from /proc


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    # utime + stime + cutime + cstime: the children's times count too, because a check's probe is a
    # short-lived child that the agent reaps between two samples; its CPU then lives on in cutime.
    ticks: int


def read_proc(pid: int) -> Proc | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may hold spaces and parentheses: the fields after it start after the last ')'.
    comm, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
    return Proc(pid, int(rest[1]), comm, sum(int(n) for n in rest[11:15]))  # fields 4, 14-17 of proc(5)


@dataclass(frozen=True)
class ProcessTable:
    """Every process of the machine at one moment, with who is whose child."""

    procs: dict[int, Proc]
    children: dict[int, list[int]]

    @classmethod
    def read(cls) -> ProcessTable:
        found = (read_proc(int(entry.name)) for entry in os.scandir("/proc") if entry.name.isdigit())
        procs = {p.pid: p for p in found if p}
        children: dict[int, list[int]] = {}
        for proc in procs.values():
            children.setdefault(proc.ppid, []).append(proc.pid)
        return cls(procs, children)

    def tree(self, root: int) -> set[int]:
        """The process and all its descendants (mcp-proxy's children run in their own session, still its children)."""
        found, todo = set(), [root]
        while todo:
            pid = todo.pop()
            if pid in self.procs and pid not in found:
                found.add(pid)
                todo += self.children.get(pid, [])
        return found

    def ticks(self, pids: set[int]) -> int:
        return sum(self.procs[p].ticks for p in pids if p in self.procs)


def machine_busy_ticks() -> int:
    """Busy jiffies of all CPUs: user, nice, system, irq, softirq, steal (guest time is already in user and nice)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------- the mesh's processes


@dataclass(frozen=True)
class MeshProcesses:
    """The mesh's processes on this machine, grouped by what runs them: {name: pids of its tree}."""

    table: ProcessTable
    groups: dict[str, set[int]]
    roots: dict[str, int]  # name -> top pid: a changed pid is a program that restarted in between
    # Groups whose top process is reaped by another group's process (supervisord reaps its programs):
    # when one ends, its CPU moves into that process's cutime, so its start ticks must be taken back.
    reaped_inside: frozenset[str] = frozenset()

    def ticks(self) -> dict[str, int]:
        return {name: self.table.ticks(pids) for name, pids in self.groups.items()}


def supervised_roots(layout: Layout) -> tuple[dict[str, int], int]:
    """({program: pid}, supervisord's pid), as `supervisorctl -c <conf>` reports them (process runtime)."""
    ctl, conf = f"{BIN_DIR}/supervisorctl", str(layout.supervisor_conf)
    try:
        daemon = subprocess.run([ctl, "-c", conf, "pid"], capture_output=True, text=True).stdout.strip()
    except OSError as err:
        raise CannotMeasure(f"supervisorctl cannot run: {err}") from None
    if not daemon.isdigit():
        raise CannotMeasure(f"no mesh answers: no supervisord runs {conf}"
                            " (deploy one, or set MESH_STATE_DIR and MESH_PORT_OFFSET)")
    # `status` exits non-zero when a program is not running: its output is what matters.
    status = subprocess.run([ctl, "-c", conf, "status"], capture_output=True, text=True).stdout
    programs = {m[1]: int(m[2]) for line in status.splitlines() if (m := re.match(r"(\S+)\s+\S+\s+pid (\d+),", line))}
    return programs, int(daemon)


def container_roots(mesh: Mesh) -> dict[str, int]:
    """{instance id: the container's top pid} of the mesh's running containers (docker runtime)."""
    # Imported here: the Docker SDK is needed only for the docker runtime.
    from meshspec.converge import engine
    from meshspec.render.containers import ownership

    if not engine.answering():
        raise CannotMeasure("no mesh answers: the Docker engine does not answer (MESH_RUNTIME=docker)")
    found = engine.containers_labelled(ownership(mesh.plan), timeout=10)
    return {c["instance"] or name: c["pid"] for name, c in found.items() if c["status"] == "running" and c["pid"]}


def left_over(table: ProcessTable, root: str, claimed: set[int]) -> list[int]:
    """Processes outside every group whose command line names a path under the state dir: ones that
    left their program's tree (a double fork) still run for the mesh, as the teardown's no_leftovers sees them."""
    prefix = root.rstrip("/") + "/"
    own = {os.getpid(), *table.tree(os.getpid())}
    return sorted(p for p in table.procs if p not in claimed and p not in own and prefix in cmdline(p))


def find_mesh_processes(mesh: Mesh, runtime: Runtime) -> MeshProcesses:
    """Read what runs the mesh, then the process table, and split the table into one group per instance."""
    if runtime.in_containers:
        roots, daemon, reaped_inside = container_roots(mesh), None, frozenset()
    else:
        roots, daemon = supervised_roots(mesh.plan.layout)
        reaped_inside = frozenset(roots)
    table = ProcessTable.read()
    groups: dict[str, set[int]] = {}
    claimed: set[int] = set()
    for name, pid in sorted(roots.items()):
        groups[name] = table.tree(pid) - claimed
        claimed |= groups[name]
    if daemon is not None:  # supervisord itself, after its programs have claimed their trees
        groups["supervisord"] = table.tree(daemon) - claimed
        claimed |= groups["supervisord"]
        roots = {**roots, "supervisord": daemon}
    for pid in left_over(table, str(mesh.plan.layout.root), claimed):
        if pid not in claimed:
            name = f"left over {table.procs[pid].comm}[{pid}]"
            groups[name], roots = table.tree(pid) - claimed, {**roots, name: pid}
            claimed |= groups[name]
    if not claimed:
        raise CannotMeasure(f"no mesh answers: no process of the mesh at {mesh.plan.layout.root} runs on this machine")
    return MeshProcesses(table, groups, roots, reaped_inside)


# ---------------------------------------------------------------- 1. idle CPU


def paced(seconds: float, started: float):
    """Sleep until `seconds` after `started`, waking every PROGRESS_EVERY s; yields the elapsed seconds at each wake."""
    while (elapsed := time.monotonic() - started) < seconds:
        mark = min(seconds, (int(elapsed // PROGRESS_EVERY) + 1) * PROGRESS_EVERY)
        time.sleep(max(0.0, started + mark - time.monotonic()))
        yield time.monotonic() - started


def cpu_deltas(start: MeshProcesses, end: MeshProcesses) -> dict[str, int]:
    """Ticks each group used between two samples. When a group's top process ended (or was replaced),
    its start ticks are taken back if its reaper is in the mesh (its ticks reappear in that reaper's
    cutime), and dropped otherwise: its last moments are then lost, never invented."""
    before, after = start.ticks(), end.ticks()
    deltas = {}
    for name in before.keys() | after.keys():
        same_top = start.roots.get(name) == end.roots.get(name)
        taken_back = before.get(name, 0) if same_top or name in start.reaped_inside else 0
        deltas[name] = after.get(name, 0) - taken_back
    return deltas


def cores(ticks: float, seconds: float) -> float:
    return ticks / USER_HZ / seconds


def measure_idle(mesh: Mesh, runtime: Runtime, seconds: float) -> dict:
    """Cores used by the machine and by the mesh's processes while nothing loads the mesh."""
    print(f"== idle CPU: {seconds:.0f} s of the mesh left alone", flush=True)
    started, machine0, mesh0 = time.monotonic(), machine_busy_ticks(), find_mesh_processes(mesh, runtime)
    for elapsed in paced(seconds, started):
        machine, now = machine_busy_ticks() - machine0, find_mesh_processes(mesh, runtime)
        print(f"  {elapsed:5.1f}/{seconds:.0f} s: machine {cores(machine, elapsed):.3f} cores,"
              f" mesh processes {cores(sum(cpu_deltas(mesh0, now).values()), elapsed):.3f} cores so far", flush=True)
    elapsed = time.monotonic() - started
    machine, end = machine_busy_ticks() - machine0, find_mesh_processes(mesh, runtime)
    deltas = cpu_deltas(mesh0, end)
    changed = sorted(n for n in mesh0.roots.keys() | end.roots.keys() if mesh0.roots.get(n) != end.roots.get(n))
    result = {
        "seconds": round(elapsed, 1),
        "machine_cores": round(cores(machine, elapsed), 4),
        "mesh_cores": round(cores(max(0, sum(deltas.values())), elapsed), 4),
        "mesh_processes": sum(len(p) for p in end.groups.values()),
        "top": [{"name": n, "cores": round(cores(t, elapsed), 4)}
                for n, t in sorted(deltas.items(), key=lambda kv: -kv[1]) if t > 0][:TOP],
        "started_or_ended": changed,
    }
    print_idle(result)
    return result


def print_idle(r: dict) -> None:
    print(f"  machine:         {r['machine_cores']:.3f} cores"
          f" (all of /proc/stat over {r['seconds']:.0f} s, this bench included)")
    print(f"  mesh processes:  {r['mesh_cores']:.3f} cores"
          f" ({r['mesh_processes']} processes, children's times included)")
    for row in r["top"]:
        print(f"    {row['name']:40} {row['cores']:.4f} cores")
    if r["started_or_ended"]:
        print(f"  note: started, restarted or ended during the window, so their own figures are approximate"
              f" (the total is not): {', '.join(r['started_or_ended'])}")


# ---------------------------------------------------------------- 2. resident memory


def kib(text: str, key: str) -> int:
    """A `Key:   123 kB` line of /proc's status or smaps_rollup, in bytes; 0 when absent (a kernel thread, a zombie)."""
    return 1024 * next((int(line.split()[1]) for line in text.splitlines() if line.startswith(key)), 0)


def memory_of(pid: int) -> tuple[int, int | None] | None:
    """(RSS, PSS) bytes of one process; PSS None when smaps_rollup may not be read; None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        pss = kib(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss:")
    except PermissionError:  # another user's process, without ptrace rights over it
        pss = None
    except (FileNotFoundError, ProcessLookupError):
        return None
    return kib(status, "VmRSS:"), pss


def measure_memory(mesh: Mesh, runtime: Runtime) -> dict:
    """RSS counts a shared page once per process that maps it; PSS splits it among them: both are printed."""
    print("== resident memory of the mesh's processes", flush=True)
    rows, unreadable = [], 0
    for name, pids in find_mesh_processes(mesh, runtime).groups.items():
        found = [m for p in pids if (m := memory_of(p))]
        unreadable += sum(pss is None for _, pss in found)
        rows.append({"name": name, "rss": sum(r for r, _ in found), "pss": sum(p or 0 for _, p in found)})
    rows.sort(key=lambda r: -r["rss"])
    result = {
        "rss_gib": round(sum(r["rss"] for r in rows) / GiB, 3),
        # A partial sum would read as a measurement; without every process's PSS there is none.
        "pss_gib": None if unreadable else round(sum(r["pss"] for r in rows) / GiB, 3),
        "pss_unreadable": unreadable,
        "top": [{"name": r["name"], "rss_mib": round(r["rss"] / MiB, 1),
                 "pss_mib": None if unreadable else round(r["pss"] / MiB, 1)} for r in rows[:TOP]],
    }
    print_memory(result)
    return result


def print_memory(r: dict) -> None:
    pss = (f"{r['pss_gib']:.3f} GiB" if r["pss_gib"] is not None
           else f"n/a ({r['pss_unreadable']} processes' smaps_rollup not readable as this user)")
    print(f"  RSS sum: {r['rss_gib']:.3f} GiB   PSS sum: {pss}")
    for row in r["top"]:
        pss_row = f"{row['pss_mib']:8.1f}" if row["pss_mib"] is not None else "     n/a"
        print(f"    {row['name']:40} RSS {row['rss_mib']:8.1f} MiB   PSS {pss_row} MiB")


# ---------------------------------------------------------------- 3. flaps under a CPU hog


def registry_client(mesh: Mesh) -> httpx.Client:
    try:
        token = read_token(mesh.plan.layout.consul_token_file, missing_ok=True)
    except OSError as err:
        raise CannotMeasure(f"the Consul token file cannot be read: {err}") from None
    r = mesh.registry
    return httpx.Client(base_url=f"{r.scheme}://{r.host}:{r.port}", headers={"X-Consul-Token": token} if token else {},
                        timeout=HTTP_TIMEOUT, trust_env=False)


def fetch_checks(client: httpx.Client, index: int = 0) -> tuple[list[dict], int | None]:
    """Every check of the mesh, and X-Consul-Index (None: the registry does not block, so poll)."""
    params = {"index": str(index), "wait": WAIT} if index else {}
    response = client.get("/v1/health/state/any", params=params)
    response.raise_for_status()
    header = response.headers.get("X-Consul-Index")
    return response.json(), int(header) if header and header.isdigit() else None


def first_look(client: httpx.Client) -> int:
    """Fail before the long windows when the registry does not answer or has no check to watch."""
    try:
        checks, _ = fetch_checks(client)
    except httpx.HTTPStatusError as err:
        raise CannotMeasure(f"the registry at {client.base_url} answered {err.response.status_code}"
                            " to /v1/health/state/any") from None
    except httpx.HTTPError as err:
        raise CannotMeasure(f"no mesh answers: the registry at {client.base_url} does not answer ({err})") from None
    except ValueError as err:
        raise CannotMeasure(f"the registry at {client.base_url} answered something that is not JSON: {err}") from None
    if not checks:
        raise CannotMeasure(f"the registry at {client.base_url} has no check to watch")
    return len(checks)


@dataclass
class Flap:
    check: str
    service: str
    status: str  # what it became: warning or critical
    at: float  # seconds after the hogs started
    back_at: float | None = None  # when it was passing again, if it was


@dataclass
class CheckWatcher:
    """Follows the status of every check with blocking queries on /v1/health/state/any (polls every
    second when the registry sets no index) and records each move away from passing."""

    client: httpx.Client
    origin: float = field(default_factory=time.monotonic)
    status: dict[str, str] = field(default_factory=dict)  # "node/check id" -> status, of the checks registered now
    seen: set[str] = field(default_factory=set)
    flaps: list[Flap] = field(default_factory=list)
    not_passing_at_start: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    answers: int = 0
    errors: int = 0
    last_error: str = ""
    # Seconds when no request could see a change: from a failure or an overdue answer to the next request.
    # (A parked blocking query is not blind: any change returns it at once.) A flap then could go unseen.
    blind_seconds: float = 0.0
    polling: bool = False
    stopped_at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def baseline(self) -> int:
        checks, index = fetch_checks(self.client)
        self._observe(checks)
        self.not_passing_at_start = sorted(k for k, s in self.status.items() if s != PASSING)
        return index or 0

    def _observe(self, checks: list[dict]) -> None:
        at = round(time.monotonic() - self.origin, 1)
        # Keyed by node too: a real Consul has a serfHealth check per node.
        current = {f"{c['Node']}/{c['CheckID']}": c for c in checks}
        with self._lock:
            self.answers += 1
            for key, check in current.items():
                before, after = self.status.get(key), check["Status"]
                if before == PASSING and after != PASSING:
                    self.flaps.append(Flap(key, check.get("ServiceName", ""), after, at))
                elif before not in (None, PASSING) and after == PASSING:
                    if opened := [f for f in self.flaps if f.check == key and f.back_at is None]:
                        opened[-1].back_at = at
            self.gone += sorted(self.status.keys() - current.keys())
            self.status = {key: check["Status"] for key, check in current.items()}
            self.seen |= current.keys()

    def _blind(self, since: float) -> None:
        """Count the time from `since` to now (or to the end of the window) as blind."""
        now = time.monotonic() if self.stopped_at is None else min(time.monotonic(), self.stopped_at)
        with self._lock:
            self.blind_seconds += max(0.0, now - since)

    def run(self, index: int) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            due = sent + (WAIT_SECONDS * 17 / 16 if index else 0.0) + LATE_AFTER
            try:
                checks, new_index = fetch_checks(self.client, index)
            except (httpx.HTTPError, ValueError) as err:  # ValueError: a body that is not JSON
                failed = time.monotonic()
                with self._lock:
                    self.errors, self.last_error = self.errors + 1, f"{type(err).__name__}: {err}"
                self._stop.wait(1.0)
                self._blind(min(failed, due))  # a refused request is blind at once, a hung one once overdue
                continue
            self._blind(due)  # nothing unless the answer was overdue (the agent too slow to answer)
            self._observe(checks)
            if not new_index:  # no blocking queries here: poll every second
                self.polling, index = True, 0
                self._stop.wait(1.0)
            else:  # an index that goes backwards means the registry's state was reset: start over
                index = new_index if new_index >= index else 0

    def start(self, index: int) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(index,), name="check-watcher", daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        self.stopped_at = time.monotonic()
        self._stop.set()
        thread.join(HTTP_TIMEOUT + 2)

    def progress(self) -> str:
        with self._lock:
            not_passing = sum(s != PASSING for s in self.status.values())
            return (f"{len(self.flaps)} flaps so far, {not_passing}/{len(self.status)} checks not passing now,"
                    f" {self.errors} failed requests")


@contextmanager
def cpu_hogs(count: int):
    """`count` busy loops, killed on the way out whatever happens (see HOG for a bench that is killed)."""
    hogs: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            hogs.append(subprocess.Popen([sys.executable, "-c", HOG, str(os.getpid())], stdin=subprocess.DEVNULL))
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def measure_flaps(client: httpx.Client, hog_seconds: float) -> dict:
    """Flaps while one busy loop per core runs for `hog_seconds`, and in the AFTER_HOG_SECONDS after."""
    count = os.cpu_count() or 1
    print(f"== flaps under a CPU hog: {count} busy loops for {hog_seconds:.0f} s,"
          f" then {AFTER_HOG_SECONDS:.0f} s of recovery", flush=True)
    watcher = CheckWatcher(client)
    try:
        index = watcher.baseline()
    except (httpx.HTTPError, ValueError) as err:
        raise CannotMeasure(f"the registry at {client.base_url} stopped answering before the hog: {err}") from None
    thread = watcher.start(index)
    try:
        with cpu_hogs(count):
            watcher.origin = started = time.monotonic()
            for elapsed in paced(hog_seconds, started):
                print(f"  hog   {elapsed:5.1f}/{hog_seconds:.0f} s: {watcher.progress()}", flush=True)
        hogs_ended = time.monotonic()
        for elapsed in paced(AFTER_HOG_SECONDS, hogs_ended):
            print(f"  after {elapsed:5.1f}/{AFTER_HOG_SECONDS:.0f} s: {watcher.progress()}", flush=True)
    finally:
        watcher.stop(thread)
    window = watcher.stopped_at - started
    if watcher.blind_seconds >= 0.95 * window:  # nothing of the window was seen: no figure to give
        raise CannotMeasure(f"the registry did not answer during the hog window"
                            f" ({watcher.errors} failed requests; last: {watcher.last_error})")
    result = {
        "hogs": count,
        "hog_seconds": round(hogs_ended - started, 1),
        "checks_watched": len(watcher.seen),
        "flaps": len(watcher.flaps),
        "flapped": [asdict(f) for f in watcher.flaps],
        "not_passing_before_hog": watcher.not_passing_at_start,
        "gone_during_window": watcher.gone,
        "watched_by": "polling every 1 s" if watcher.polling else f"blocking queries (wait={WAIT})",
        "registry_answers": watcher.answers,
        "failed_requests": watcher.errors,
        "blind_seconds": round(watcher.blind_seconds, 1),
        "window_seconds": round(window, 1),
    }
    print_flaps(result)
    return result


def print_flaps(r: dict) -> None:
    print(f"  checks watched: {r['checks_watched']}   flaps: {r['flaps']}"
          f"   (t = seconds after the hogs started; they ran until t = {r['hog_seconds']:.0f})")
    for f in r["flapped"]:
        back = (f"passing again at t = {f['back_at']:.1f}" if f["back_at"] is not None
                else "not passing again by the end")
        print(f"    {f['check']:40} {f['service']:24} -> {f['status']} at t = {f['at']:.1f}, {back}")
    if r["not_passing_before_hog"]:
        print(f"  not passing before the hog (not counted): {', '.join(r['not_passing_before_hog'])}")
    if r["gone_during_window"]:
        print(f"  deregistered during the window: {', '.join(r['gone_during_window'])}")
    print(f"  registry, watched by {r['watched_by']}: {r['registry_answers']} answers, {r['failed_requests']} failed"
          f" requests, blind for {r['blind_seconds']:.1f} of {r['window_seconds']:.0f} s"
          f" (no answer or an overdue one: a flap then could go unseen)")


# ---------------------------------------------------------------- the run


def print_table(idle: dict, memory: dict, flaps: dict) -> None:
    memory_gib = memory["pss_gib"] if memory["pss_gib"] is not None else memory["rss_gib"]
    pss = f"PSS {memory['pss_gib']:.2f} GiB, " if memory["pss_gib"] is not None else ""
    blind = f", blind {flaps['blind_seconds']:.0f} s" if flaps["blind_seconds"] else ""
    # Zero flaps seen while blind part of the time is not zero flaps: the goal is then unsure, not met.
    no_flaps = flaps["flaps"] <= GOAL_FLAPS and (None if flaps["blind_seconds"] else True)
    rows = [
        ("idle CPU, mesh processes", f"{idle['mesh_cores']:.3f} core (machine {idle['machine_cores']:.3f})",
         f"<= {GOAL_IDLE_CORES:.2f} core", idle["mesh_cores"] <= GOAL_IDLE_CORES),
        ("flaps under CPU hog", f"{flaps['flaps']} of {flaps['checks_watched']} checks{blind}", f"= {GOAL_FLAPS}",
         no_flaps),
        # PSS when every process's is readable: RSS counts each shared page once per process.
        ("resident memory", f"{pss}RSS {memory['rss_gib']:.2f} GiB", f"<= {GOAL_MEMORY_GIB:.0f} GiB",
         memory_gib <= GOAL_MEMORY_GIB),
    ]
    print()
    print(f"{'figure':26} | {'measured':36} | {'goal':12} | met")
    for figure, measured, goal, met in rows:
        print(f"{figure:26} | {measured:36} | {goal:12} | {'unsure' if met is None else 'yes' if met else 'NO'}")


def load() -> tuple[Mesh, Runtime]:
    try:
        return configured_mesh(), settings.runtime()
    except SpecInvalid as err:
        first = err.lines("nothing was measured")[0]
        raise CannotMeasure(f"the spec is invalid: {first} (meshspec validate lists every problem)") from None
    except (settings.SettingsError, HostsError) as err:
        raise CannotMeasure(str(err)) from None


def run(args: argparse.Namespace) -> dict:
    mesh, runtime = load()
    client = registry_client(mesh)
    checks = first_look(client)
    processes = find_mesh_processes(mesh, runtime)
    remote = [i.id for i in mesh.plan.instances if i.host.name != LOCAL]
    print(f"mesh {mesh.plan.spec.mesh.name} at {mesh.plan.layout.root} ({runtime} runtime): "
          f"{sum(len(p) for p in processes.groups.values())} processes in {len(processes.groups)} groups, "
          f"{checks} checks at {client.base_url}; machine: {os.cpu_count()} cores, USER_HZ {USER_HZ}", flush=True)
    if remote:
        print(f"  note: only this machine's processes are measured; {len(remote)} instances are planned on other hosts")
    idle = measure_idle(mesh, runtime, args.idle_seconds)
    memory = measure_memory(mesh, runtime)  # the mesh at rest, before the hog can make anything restart or grow
    flaps = measure_flaps(client, args.hog_seconds)
    print_table(idle, memory, flaps)
    return {"idle_cpu": idle, "memory": memory, "flaps_under_hog": flaps,
            "goals": {"idle_cores": GOAL_IDLE_CORES, "flaps": GOAL_FLAPS, "memory_gib": GOAL_MEMORY_GIB}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle CPU window (default 60)")
    parser.add_argument("--hog-seconds", type=float, default=60.0,
                        help=f"CPU hog window, followed by {AFTER_HOG_SECONDS:.0f} s of recovery (default 60)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to PATH as JSON")
    args = parser.parse_args()
    # A CI timeout sends SIGTERM: raise SystemExit so the try/finally blocks kill the hogs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        figures = run(args)
    except CannotMeasure as err:
        print(f"health_load: not measured: {err}", file=sys.stderr)
        return 2
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
