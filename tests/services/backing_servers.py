"""Session fixtures for the services' integration tests: real PostgreSQL and RabbitMQ from Debian's
packages (`postgresql`, `rabbitmq-server`), the embedded agent, and the services themselves, each a
subprocess on a free 127.0.0.1 port with its data in a tmp dir. A plugin, not a conftest: test modules
load it with `pytest_plugins = ["tests.services.backing_servers"]`."""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import httpx
import pytest

from tests.agent.conftest import AgentProcess, free_port, wait_until

READY_TIMEOUT = 60.0
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else shutil.which(name)


def _log_tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def _password_file(root: Path) -> Path:
    """A fresh password in a 0600 file, as the deploy gives a service's dependents theirs."""
    held = root / "password"
    held.write_text(uuid.uuid4().hex + "\n")
    held.chmod(0o600)
    return held


class PostgresServer:
    """`initdb` + `postgres` in a tmp dir, run as user postgres when we are root (postgres refuses root).
    TCP logins by password (scram), as the shipped spec's PostgreSQL: `url` carries it, `account_url`
    and `password_file` are what the services are given."""

    def __init__(self) -> None:
        if not (_pg_bin("initdb") and _pg_bin("postgres")):
            pytest.skip("PostgreSQL binaries missing: apt-get install postgresql")
        self.root = Path(tempfile.mkdtemp(prefix="meshspec-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.log_path = self.root / "postgres.log"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.password_file = _password_file(self.root)
        if self.user:  # initdb reads it as postgres
            os.chown(self.password_file, pw.pw_uid, pw.pw_gid)
        self.proc: subprocess.Popen | None = None

    @property
    def account_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return self.account_url.replace("postgres@", f"postgres:{self.password_file.read_text().strip()}@", 1)

    def _run(self, cmd: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(cmd, user=self.user, group=self.user, cwd=self.root, **kw)

    def init(self) -> PostgresServer:
        proc = self._run([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth-host=scram-sha-256",
                          "--auth-local=peer", f"--pwfile={self.password_file}", "-E", "UTF8", "--no-sync"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode(errors="replace")
        return self

    def start(self) -> PostgresServer:
        log = open(self.log_path, "ab")
        self.proc = self._run([_pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                               "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._ready, READY_TIMEOUT, interval=0.1)
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"postgres exited with {self.proc.returncode}: {_log_tail(self.log_path)}")
        return subprocess.run([_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"]).returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, the server is gone when this returns."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RabbitServer:
    """`rabbitmq-server` with its node, mnesia, logs, cookie (tmp HOME) and epmd all private to the test,
    and one account, `meshspec`, made from a config file as the shipped spec's (no guest)."""

    def __init__(self) -> None:
        if not os.path.exists(RABBITMQ_SERVER):
            pytest.skip("RabbitMQ missing: apt-get install rabbitmq-server")
        self.root = Path(tempfile.mkdtemp(prefix="meshspec-rabbit-"))
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.node = f"meshspec-test-{uuid.uuid4().hex[:8]}@localhost"
        self.log_path = self.root / "rabbitmq.log"
        home = self.root / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex)
        cookie.chmod(0o400)
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
                    "HOME": str(home), "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                    "RABBITMQ_NODENAME": self.node, "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(self.root / "log"), "RABBITMQ_DIST_PORT": str(self.dist_port),
                    "ERL_EPMD_PORT": str(self.epmd_port), "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf")}
        self.password_file = _password_file(self.root)
        (self.root / "rabbitmq.conf").write_text(f"default_user = meshspec\ndefault_pass = {self._password}\n")
        self.proc: subprocess.Popen | None = None

    @property
    def _password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def account_url(self) -> str:
        return f"amqp://meshspec@127.0.0.1:{self.port}/"

    @property
    def url(self) -> str:
        return f"amqp://meshspec:{self._password}@127.0.0.1:{self.port}/"

    def launch(self) -> RabbitServer:
        """Start the broker without waiting (it boots in seconds: do something else meanwhile)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([RABBITMQ_SERVER], env=self.env, cwd=self.root, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self) -> RabbitServer:
        wait_until(self._ready, READY_TIMEOUT, interval=0.25)
        return self

    def start(self) -> RabbitServer:
        return self.launch().wait_ready()

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"rabbitmq exited with {self.proc.returncode}: {_log_tail(self.log_path)}")

        async def connect() -> bool:
            try:
                conn = await aio_pika.connect(self.url, timeout=2)
            except (OSError, asyncio.TimeoutError, aio_pika.exceptions.AMQPError):
                return False
            await conn.close()
            return True

        logging.getLogger("aiormq").setLevel(logging.CRITICAL)  # refused connections while it boots are expected
        return asyncio.run(connect())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        epmd = shutil.which("epmd") or next(iter(glob.glob("/usr/lib/erlang/erts-*/bin/epmd")), None)
        if epmd:  # our private epmd (ERL_EPMD_PORT) outlives the broker: stop just that one
            subprocess.run([epmd, "-kill"], env=self.env, capture_output=True, timeout=10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class ServiceProcess:
    """One of meshspec's services (`python -m meshspec.runtime.services.<module>`) on a free port."""

    def __init__(self, module: str, log_dir: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None, ready_path: str = "/health") -> None:
        self.module = module
        self.port = free_port()
        self.env = env or {}
        self.args = args or []
        self.ready_path = ready_path
        self.log_path = log_dir / f"{module}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "CONSUL_"))} | self.env
        cmd = [sys.executable, "-m", f"meshspec.runtime.services.{self.module}", "--host", "127.0.0.1",
               "--port", str(self.port), *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, READY_TIMEOUT, interval=0.1)
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.module} exited with {self.proc.returncode}: {self.log()[-3000:]}")
        try:
            httpx.get(self.url + self.ready_path, timeout=2)  # any answer: the server is up
            return True
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# -------------------------------------------------------------------------------- fixtures --
@pytest.fixture(scope="session")
def rabbitmq_launched() -> Iterator[RabbitServer]:
    server = RabbitServer().launch()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def postgres(rabbitmq_launched) -> Iterator[PostgresServer]:
    """PostgreSQL, set up while RabbitMQ boots."""
    server = PostgresServer().init().start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def rabbitmq(rabbitmq_launched, postgres) -> RabbitServer:
    return rabbitmq_launched.wait_ready()


@pytest.fixture(scope="session")
def mesh_agent(tmp_path_factory) -> Iterator[AgentProcess]:
    agent = AgentProcess(tmp_path_factory.mktemp("mesh-agent") / "data").start()
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def service_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def start_service(service_logs) -> Iterator:
    """start_service(module, env=..., args=...) → a started ServiceProcess, stopped at the end of the session."""
    started: list[ServiceProcess] = []

    def start(module: str, env: dict[str, str] | None = None, args: list[str] | None = None,
              ready_path: str = "/health") -> ServiceProcess:
        svc = ServiceProcess(module, service_logs, env, args, ready_path).start()
        started.append(svc)
        return svc

    yield start
    for svc in started:
        if svc.proc.poll() is None and os.environ.get("MESHSPEC_REPORT_RSS"):
            print(f"\nRSS {svc.module}:{svc.port} {svc.rss_mb():.1f} MB")
        svc.stop()


@pytest.fixture(scope="session")
def deps_env(postgres, rabbitmq, mesh_agent) -> dict[str, str]:
    """The services' environment as the shipped spec gives it: accounts in the URLs, passwords in files."""
    return {"MESH_CONSUL_ADDR": mesh_agent.address,
            "MESH_AMQP_URL": rabbitmq.account_url, "MESH_AMQP_PASSWORD_FILE": str(rabbitmq.password_file),
            "MESH_DATABASE_URL": postgres.account_url, "MESH_DATABASE_PASSWORD_FILE": str(postgres.password_file)}


@pytest.fixture(scope="session")
def backend_api(start_service, deps_env) -> ServiceProcess:
    return start_service("backend_api", deps_env)


@pytest.fixture(scope="session")
def task_worker(start_service, deps_env, backend_api) -> ServiceProcess:
    return start_service("task_worker", deps_env, ["--prefetch", "8"])


@pytest.fixture(scope="session")
def consul_client(mesh_agent):
    return mesh_agent.client()
