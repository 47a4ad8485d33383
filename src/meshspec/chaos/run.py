"""One experiment's run: its directory, the mesh it acts on, the load through the proxy, the watcher
of HAProxy's servers, and the faults' windows. The actions and probes Chaos Toolkit calls reach it
through `current()`: an experiment runs in one process, one at a time.

Files of a run directory (what the probes judge and the report draws):
  requests.csv            each request of every load: start time, ms, answered (1) or not (0)
  load_stats.csv          Locust's totals of the route load (sessions_stats.csv: of the MCP sessions)
  sessions.jsonl          {"t", "user", "session", "event"}: an MCP session opened, ended (404) or failed
  owners.json             {session: server}: who held each MCP session when the fault began
  jobs.json               {job id: seconds}: the jobs backend-api acknowledged (202)
  rotation.jsonl          {"t", "server", "in"}: a server of a watched backend left or rejoined rotation
  faults.jsonl            {"what", "start", "end"}: each fault's window
  journal.json            Chaos Toolkit's journal
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from meshspec.converge.mesh import Mesh
from meshspec.plan import Runtime
from meshspec.render.containers import ownership
from meshspec.render.haproxy import backend_name, proxy_instance
from meshspec.runtime.proxy.runtime_api import RuntimeApi, RuntimeApiError
from meshspec.spec.resolve import effective_routing, path_prefix
from meshspec.verify.checks import Supervisor
from meshspec.verify.run import edge_headers

LOADTESTS = Path(__file__).resolve().parents[3] / "loadtests"
LOCUSTFILES = {"load": LOADTESTS / "route.py", "sessions": LOADTESTS / "mcp_sessions.py"}
WATCH_EVERY = 0.1  # s between two reads of HAProxy's server states
# backend-api's jobs API, under its route's prefix (runtime/services/backend_api.py, API)
ENQUEUE, RESULTS = "/api/v1/mesh/enqueue", "/api/v1/mesh/results/"


@dataclass
class Load:
    """Locust, headless, on one route through the proxy's edge, for a fixed time."""

    process: subprocess.Popen
    started: float
    seconds: float

    def wait(self) -> int:
        return self.process.wait(self.seconds + 30)


class Watcher(threading.Thread):
    """Polls HAProxy's runtime API and writes each change of a server's rotation (up and ready: in;
    else out) of the watched backends, with the time it was seen."""

    def __init__(self, api: RuntimeApi, services: list[str], path: Path) -> None:
        super().__init__(daemon=True, name="chaos-watcher")
        self.api, self.backends, self.path = api, [backend_name(s) for s in services], path
        self.stopped = threading.Event()
        self.seen: dict[str, bool] = {}

    def run(self) -> None:
        with open(self.path, "a") as out:
            while not self.stopped.is_set():
                try:  # every backend's servers in one read: the watch costs the proxy one command a tick
                    states = [s for s in self.api.servers_state() if s.backend in self.backends]
                except RuntimeApiError:
                    states = []  # a reload in progress: the next read tells
                for s in states:
                    if s.name.startswith("spare-") and s.name not in self.seen:
                        continue  # an empty slot is no server
                    inside = s.in_rotation
                    if self.seen.get(s.name) != inside:
                        event = {"t": time.time(), "server": s.name, "in": inside}
                        if s.name not in self.seen:
                            event["first"] = True  # how it stood when the watch began: no change
                        self.seen[s.name] = inside
                        out.write(json.dumps(event) + "\n")
                        out.flush()
                self.stopped.wait(WATCH_EVERY)


@dataclass
class ChaosRun:
    name: str
    directory: Path
    mesh: Mesh
    runtime: Runtime
    api_key_file: str | None
    loads: dict[str, Load] = field(default_factory=dict)  # by name: "load" (routes), "sessions" (MCP)
    watcher: Watcher | None = None
    started: float = field(default_factory=time.time)

    @property
    def proxy_url(self) -> str:
        front = proxy_instance(self.mesh.plan)
        return f"http://{front.address}:{front.port}"

    def file(self, name: str) -> Path:
        return self.directory / name

    def pid_of(self, instance_id: str) -> int:
        """The running process of an instance (its container's first process in the docker runtime)."""
        if self.runtime.in_containers:
            found = Supervisor.read_containers(ownership(self.mesh.plan))
        else:
            found = Supervisor.read(str(self.mesh.plan.layout.supervisor_socket))
        state, pid = found.states.get(instance_id, (None, None))
        if not pid:
            raise RuntimeError(f"{instance_id} has no running process ({found.error or state})")
        return pid

    def fault(self, what: str, start: float, end: float) -> None:
        with open(self.file("faults.jsonl"), "a") as out:
            out.write(json.dumps({"what": what, "start": start, "end": end}) + "\n")

    def route_url(self, service: str, path: str) -> str:
        """The proxy's URL of `path` on `service` (its route's prefix, as the spec sets it)."""
        svc = self.mesh.plan.service(service)
        return self.proxy_url + path_prefix(svc, effective_routing(self.mesh.plan.spec, svc)).rstrip("/") + path

    def edge_headers(self) -> dict[str, str]:
        return edge_headers(self.mesh.plan)

    @property
    def load_started(self) -> float | None:
        return min((load.started for load in self.loads.values()), default=None)

    def _locust(self, name: str, env: dict[str, str], users: int, seconds: float, rate_per_user: float) -> None:
        """Locust headless with one of LOCUSTFILES for `seconds`, in the background; its totals in
        `<name>_stats.csv`, its output in `<name>.log`, each request in requests.csv."""
        env = {**os.environ, **env, "MESH_RATE_PER_USER": str(rate_per_user),
               "MESH_REQUEST_LOG": str(self.file("requests.csv"))}
        if self.api_key_file:
            env["MESH_API_KEY_FILE"] = self.api_key_file
        locust = Path(sys.executable).parent / "locust"
        argv = [str(locust), "-f", str(LOCUSTFILES[name]), "--headless", "-u", str(users), "-r", str(users), "-t",
                f"{int(seconds)}s", "--stop-timeout", "5", "--only-summary", "--host", self.proxy_url,
                "--csv", str(self.file(name))]
        with open(self.file(f"{name}.log"), "ab") as log:
            self.loads[name] = Load(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT),
                                    time.time(), seconds)

    def start_load(self, routes: list[dict[str, str]], users: int, seconds: float, rate_per_user: float) -> None:
        self._locust("load", {"MESH_ROUTES": json.dumps(routes)}, users, seconds, rate_per_user)

    def start_sessions(self, service: str, users: int, seconds: float, rate_per_user: float) -> None:
        self._locust("sessions", {"MESH_MCP_PATH": f"/mcp/{service}", "MESH_SESSION_LOG": str(self.file("sessions.jsonl"))},
                     users, seconds, rate_per_user)

    def session_owners(self, service: str) -> dict[str, str]:
        """{MCP session id: server} from the proxy's stick table of `service` (`show table`: the
        server's name is its `server_key`)."""
        table = RuntimeApi(self.mesh.plan.proxy_runtime).send(f"show table {backend_name(service)}")
        return dict(re.findall(r" key=(\S+) .*?server_key=(\S+)", table))

    def watch(self, services: list[str]) -> None:
        """Watch these services' servers too (one watcher per run, whichever load started it)."""
        if self.watcher:
            self.watcher.backends += [b for b in map(backend_name, services) if b not in self.watcher.backends]
            return
        self.watcher = Watcher(RuntimeApi(self.mesh.plan.proxy_runtime), services, self.file("rotation.jsonl"))
        self.watcher.start()

    def finish(self) -> None:
        """Stop what the experiment left running (a failed one may not have reached its end)."""
        for load in self.loads.values():
            if load.process.poll() is None:
                load.process.terminate()
                load.process.wait(30)
        if self.watcher:
            self.watcher.stopped.set()
            self.watcher.join(5)


CURRENT: ChaosRun | None = None


def current() -> ChaosRun:
    if CURRENT is None:
        raise RuntimeError("no chaos run: meshspec's actions and probes run inside `meshspec chaos run`")
    return CURRENT
