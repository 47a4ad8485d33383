"""Real MCP servers for tests: the official SDK's, in a venv of its own under tests/.cache
(`mcp_python`), and the stdlib servers that are not MCP; each in a subprocess on a 127.0.0.1 port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import free_port

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "servers"
MCP_VENV = HERE.parent / ".cache" / "mcp-venv"
MCP_REQUIREMENTS = ["mcp==2.3.0", "uvicorn"]
READY_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def mcp_python() -> Path:
    """A venv with the official MCP SDK, kept under tests/.cache; rebuilt when its requirements change."""
    MCP_VENV.parent.mkdir(parents=True, exist_ok=True)
    # The cache ignores itself (as .pytest_cache does), so git and repository scans never see the venv.
    (MCP_VENV.parent / ".gitignore").write_text("# created by tests/probes\n*\n")
    python = MCP_VENV / "bin" / "python"
    stamp = MCP_VENV / "requirements.done"
    wanted = "\n".join(MCP_REQUIREMENTS)
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(MCP_VENV)], check=True)
        pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              *MCP_REQUIREMENTS], capture_output=True, text=True, timeout=600)
        if pip.returncode != 0:
            pytest.fail(f"could not install {MCP_REQUIREMENTS} into {MCP_VENV}:\n{pip.stdout[-2000:]}"
                        f"{pip.stderr[-2000:]}")
        stamp.write_text(wanted)
    return python


class ServerProcess:
    """A server script in a subprocess on a free 127.0.0.1 port; its output goes to a log file."""

    def __init__(self, python: Path, script: str, *args: str, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_dir / f"{Path(script).stem}-{self.port}.log"
        self.cmd = [str(python), str(SERVERS / script), "--port", str(self.port), *args]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def wait_listening(self) -> ServerProcess:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log_path.read_text()[-2000:]
                raise AssertionError(f"{self.cmd} exited with {self.proc.returncode}: {log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{self.cmd} did not listen within {READY_TIMEOUT}s: {self.log_path.read_text()[-2000:]}")

    def live_sessions(self) -> int:
        """Sessions the SDK's session manager is tracking (the test server's GET /sessions)."""
        return httpx.get(f"http://127.0.0.1:{self.port}/sessions", timeout=5, trust_env=False).json()["live"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
