"""Real processes for the data-plane tests and the bench: HAProxy (`haproxy -W -db -S master.sock -f cfg`), backend
HTTP servers, and the controller running in a thread. Everything on 127.0.0.1, killed by PID."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from meshspec.common.connect_certs import service_uri
from meshspec.plan import Instance, Plan
from meshspec.plan.layout import STATS_USERS
from meshspec.render.haproxy import ProxyOptions, config_shape, proxy_instance, proxy_paths, render_haproxy
from meshspec.render.mesh_ca import ca_certificate_pem, ca_key_pem, certificate_pem
from meshspec.render.preparation import USERADD, users_of
from meshspec.render.secrets import edge_files, stats_files
from meshspec.runtime.proxy.apply import reload_haproxy
from meshspec.runtime.proxy.controller import Controller
from meshspec.runtime.proxy.runtime_api import RuntimeApi
from tests.support import listening, wait_until

BACKEND = Path(__file__).resolve().parent / "backend.py"


STATS_PASSWORD = "harness-stats"
CA_SECRET = "harness-mesh-ca"  # what the deploy derives the mesh CA from (the management token's HMAC)


def write_proxy_files(plan: Plan, ca_secret: str = CA_SECRET, instance: Instance | None = None) -> None:
    """The files HAProxy loads that the deploy writes before it starts: for an mTLS listener the mesh
    CA (certificate and key), the proxy's first certificate, and the intentions and inbound maps
    empty (the controller fills them); and the consumers map, where the spec declares consumers. `instance`: the
    proxy instance (by default the first)."""
    domain, proxy = plan.spec.mesh.name, plan.spec.proxy.service
    instance = instance or proxy_instance(plan)
    paths = proxy_paths(plan, instance)
    files = {plan.layout.connect_ca_file: ca_certificate_pem(ca_secret, domain),
             plan.layout.connect_ca_key_file: ca_key_pem(ca_secret),
             Path(paths["ca"]): ca_certificate_pem(ca_secret, domain),
             Path(paths["certificate"]): certificate_pem(
                 ca_secret, domain, proxy, service_uri(domain, plan.spec.consul.datacenter, proxy),
                 dt.datetime.now(dt.timezone.utc))}
    for path, text in files.items():
        Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        Path(path).write_text(text)
        Path(path).chmod(0o600)
    Path(paths["intentions"]).touch()
    Path(paths["inbound"]).touch()
    for secret in edge_files(plan, instance):
        Path(secret.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        Path(secret.path).write_text(secret.text(ca_secret))

def proxy_users(plan: Plan) -> None:
    """The system users the plan's HAProxy hands its sockets to, made as the deploy makes them (a
    fresh machine has none before its first deploy)."""
    process = plan.service(plan.spec.proxy.service).process
    for user in users_of(process) if process else []:
        if subprocess.run(["id", "-u", user], capture_output=True).returncode != 0:
            subprocess.run([*USERADD, user], check=True, capture_output=True)


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Backend:
    """tests/proxy/backend.py on a port."""

    def __init__(self, name: str, port: int, log_dir: Path) -> None:
        self.name, self.port = name, port
        self.log_path = log_dir / f"backend-{name}-{port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Backend:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(BACKEND), "--port", str(self.port), "--name", self.name],
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait(self) -> Backend:
        wait_until(lambda: listening(self.port), 10, what=f"backend {self.name} listening")
        return self

    def control(self, status: int) -> None:
        httpx.get(f"http://127.0.0.1:{self.port}/_control?status={status}", trust_env=False, timeout=5)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)


class HAProxy:
    """HAProxy in master-worker mode on the plan's rendered config."""

    def __init__(self, plan: Plan, options: ProxyOptions = ProxyOptions()) -> None:
        self.plan, self.options = plan, options
        self.proxy = proxy_instance(plan)
        self.paths = config_shape(plan, options)["paths"]
        self.config = Path(self.paths["config"])
        self.log_path = self.config.parent / "haproxy.log"
        self.proc: subprocess.Popen | None = None
        self.api = RuntimeApi(self.plan.proxy_runtime)
        self.users = Path(self.plan.proxy_file(STATS_USERS))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.ports['stats']}"

    def write_config(self, plan: Plan | None = None, options: ProxyOptions | None = None) -> None:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(render_haproxy(plan or self.plan, options or self.options))

    def start(self) -> HAProxy:
        proxy_users(self.plan)
        self.write_config()
        if config_shape(self.plan, self.options)["certificate"] and not Path(self.paths["certificate"]).exists():
            write_proxy_files(self.plan)  # an mTLS listener loads them: as the deploy writes them before HAProxy starts
        for secret in stats_files(self.plan):  # as the deploy writes them, with a password of the tests'
            Path(secret.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            Path(secret.path).write_text(secret.text(STATS_PASSWORD))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["haproxy", "-W", "-db", "-S", self.plan.proxy_master_bind(proxy_instance(self.plan)),
                                          "-f", str(self.config), "-f", str(self.users)],
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_until(self.api.is_reachable, 10, what="HAProxy runtime API")
        return self

    def reload(self) -> str:
        return reload_haproxy(self.api, Path(self.paths["pidfile"]), Path(self.paths["state_file"]))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGUSR1)


class ControllerThread:
    """The controller's asyncio loop in a daemon thread."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.controller.run())
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass

    def start(self) -> ControllerThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
