"""The actions meshspec's chaos experiments name (Chaos Toolkit Python providers): load through the
proxy, and faults on the instances of the running mesh. Each fault writes its window to the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import httpx

from meshspec.chaos.run import ENQUEUE, current
from meshspec.common.consul_token import read_token
from meshspec.render.haproxy import proxy_paths
from meshspec.runtime.proxy.apply import reload_haproxy
from meshspec.runtime.proxy.runtime_api import RuntimeApi
from meshspec.runtime.supervisor_rpc import supervisor_rpc


def start_load(routes: list[dict[str, str]], users: int = 10, seconds: float = 30, rate_per_user: float = 20,
               watch: list[str] | None = None) -> str:
    """Locust on `routes` ({"path", "expect"} each, requested in turn) through the proxy's edge for
    `seconds`, in the background; and the watcher of the `watch` services' servers in HAProxy."""
    run = current()
    run.watch(watch or [])
    run.start_load(routes, users, seconds, rate_per_user)
    return f"{users} users on {', '.join(r['path'] for r in routes)} for {seconds:.0f} s"


def start_sessions(service: str, users: int = 8, seconds: float = 30, rate_per_user: float = 5,
                   watch: list[str] | None = None) -> str:
    """Locust users that each hold an MCP session of `service` through the proxy's edge (a new one
    when the server forgets theirs) for `seconds`, in the background; and the watcher, as start_load."""
    run = current()
    run.watch(watch or [service])
    run.start_sessions(service, users, seconds, rate_per_user)
    return f"{users} MCP sessions of {service} for {seconds:.0f} s"


def wait_for_load() -> dict[str, int]:
    """Until every load's time is over; Locust's exit status of each (1: some request failed)."""
    run = current()
    if not run.loads:
        raise RuntimeError("no load was started (start_load, start_sessions)")
    return {name: load.wait() for name, load in run.loads.items()}


def record_sessions(service: str) -> str:
    """Which server holds each MCP session of `service` now, from the proxy's stick table: the
    probe sessions_held judges each session by who held it when the fault began."""
    run = current()
    owners = run.session_owners(service)
    run.file("owners.json").write_text(json.dumps(owners))
    held = {server: sum(1 for s in owners.values() if s == server) for server in sorted(set(owners.values()))}
    return f"{len(owners)} sessions: {held}"


def _instance(service: str, replica: int) -> str:
    found = [i for i in current().mesh.plan.instances_of(service) if i.replica == replica]
    if not found:
        raise ValueError(f"{service} has no replica {replica} in the plan")
    return found[0].id


def kill_replica(service: str, replica: int = 0, signal_name: str = "SIGKILL") -> str:
    """Send one signal to one instance's process (its supervisor restarts it, as after a crash)."""
    run = current()
    instance = _instance(service, replica)
    pid = run.pid_of(instance)
    now = time.time()
    os.kill(pid, signal.Signals[signal_name])
    run.fault(f"{signal_name} {instance}", now, now)
    return f"{signal_name} to {instance} (pid {pid})"


def hang_replica(service: str, replica: int = 0, seconds: float = 20) -> str:
    """SIGSTOP one instance's process for `seconds`, then SIGCONT: a hang, not a crash (its port still
    accepts connections; nothing answers)."""
    run = current()
    instance = _instance(service, replica)
    pid = run.pid_of(instance)
    start = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
        run.fault(f"SIGSTOP {instance} {seconds:.0f} s", start, time.time())
    return f"{instance} (pid {pid}) stopped {seconds:.0f} s"


def kill_program(service: str, seconds: float, replica: int = 0) -> str:
    """SIGKILL one instance's process and keep it down `seconds` (supervisord's stop, then start): a
    crash that outlasts a restart. The process runtime's supervisord only."""
    run = current()
    if run.runtime.in_containers:
        raise RuntimeError("kill_program keeps a program down through supervisord: the process runtime only")
    instance = _instance(service, replica)
    supervisor = supervisor_rpc(str(run.mesh.plan.layout.supervisor_socket))
    pid = run.pid_of(instance)
    start = time.time()
    os.kill(pid, signal.SIGKILL)
    try:
        try:
            supervisor.stopProcess(instance, True)  # it may already be restarting: stop that
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString:
                raise
        time.sleep(max(0.0, seconds - (time.time() - start)))
    finally:
        supervisor.startProcess(instance, True)
        run.fault(f"SIGKILL {instance}, down {seconds:.0f} s", start, time.time())
    return f"{instance} (pid {pid}) killed and kept down {seconds:.0f} s"


def reload_proxy(times: int = 10, within_s: float = 10) -> str:
    """`times` hitless reloads of HAProxy, started evenly over `within_s`, each the controller's own
    (validate, wait for the peers' resync, save server state, reload through the master CLI, wait
    for the new worker's resync): each is a fault window. A reload that fails raises."""
    run = current()
    paths = proxy_paths(run.mesh.plan)
    api = RuntimeApi(run.mesh.plan.proxy_runtime)
    began = time.time()
    for n in range(times):
        time.sleep(max(0.0, began + n * within_s / times - time.time()))
        start = time.time()
        pid = reload_haproxy(api, Path(paths["pidfile"]), Path(paths["state_file"]))
        run.fault(f"reload {n + 1}/{times}: worker {pid}", start, time.time())
    return f"{times} reloads in {time.time() - began:.1f} s"


def cpu_hog(seconds: float = 60, workers: int | None = None) -> str:
    """Busy loops on every core (`workers` processes, default one per core) at the mesh's own
    priority for `seconds`: the mesh's programs, its checks and the proxy share what is left."""
    run = current()
    count = workers or os.cpu_count() or 1
    start = time.time()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(seconds)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        run.fault(f"CPU hog: {count} busy loops, {seconds:.0f} s", start, time.time())
    return f"{count} busy loops for {seconds:.0f} s"


def stop_load() -> str:
    """A rollback: whatever the method reached, the load and the watcher stop."""
    current().finish()
    return "load and watcher stopped"


def enqueue_jobs(count: int = 40, seconds: float = 1.0) -> str:
    """`count` sleep jobs of `seconds` each, enqueued at backend-api through the proxy's edge; the
    ones it acknowledged (202, with their id) go to jobs.json, which jobs_held reads back."""
    run = current()
    acknowledged = {}
    with httpx.Client(trust_env=False, timeout=10, headers=run.edge_headers()) as client:
        for _ in range(count):
            answer = client.post(run.route_url("backend-api", ENQUEUE),
                                 json={"kind": "sleep", "payload": {"seconds": seconds}})
            if answer.status_code == 202:
                acknowledged[answer.json()["id"]] = seconds
    run.file("jobs.json").write_text(json.dumps(acknowledged))
    return f"{len(acknowledged)} of {count} jobs acknowledged"


def write_kv(prefix: str, count: int) -> str:
    """Write `count` keys to the registry's KV store, keeping those it acknowledged (kv_held reads
    them back after the fault)."""
    run = current()
    client = run.mesh.registry.client(read_token(run.mesh.plan.layout.consul_token_file), 5)
    acknowledged = {}
    for n in range(count):
        key, value = f"{prefix}/{n}", f"{run.started:.3f}/{n}"
        if client.kv.put(key, value):
            acknowledged[key] = value
    run.file("kv.json").write_text(json.dumps(acknowledged))
    return f"{len(acknowledged)} of {count} writes acknowledged"
