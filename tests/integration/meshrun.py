"""Run meshspec deploys against an isolated mesh (own state dir and port offset) and read its state."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import consul
import yaml

from meshspec.converge.pyinfra_run import parse_totals

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Run:
    code: int
    output: str

    def changed_operations(self) -> list[str]:
        """Operations whose Success column is not '-' in pyinfra's results."""
        table = self.output.split("--> Results:", 1)[1].splitlines()[2:]
        rows = [re.split(r"\s{2,}", line.strip()) for line in table if line.strip() and not line.startswith("-->")]
        return [r[0] for r in rows if r[0] != "Grand total" and len(r) > 2 and r[2] != "-"]


@dataclass
class Mesh:
    state_dir: Path
    port_offset: int
    spec_path: Path
    runtime: str = "process"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "CONSUL_HTTP"))}
        return env | {"MESH_STATE_DIR": str(self.state_dir), "MESH_PORT_OFFSET": str(self.port_offset),
                      "MESH_SPEC": str(self.spec_path), "MESH_RUNTIME": self.runtime}

    def deploy(self, deploy: str = "deploys/mesh.py", *extra: str, timeout: float = 600) -> Run:
        proc = subprocess.run([str(BIN / "meshspec"), "deploy", deploy, *extra], cwd=REPO, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)
        run = Run(proc.returncode, proc.stdout + proc.stderr)
        assert parse_totals(run.output).hosts or run.code, run.output
        return run

    def spec(self) -> dict:
        return yaml.safe_load(self.spec_path.read_text())

    def write_spec(self, data: dict) -> None:
        self.spec_path.write_text(yaml.safe_dump(data, sort_keys=False))

    def consul(self) -> consul.Consul:
        spec = self.spec()
        agent = next(s for s in spec["services"] if s["name"] == spec.get("consul", {}).get("service", "consul"))
        token = (self.state_dir / "consul" / "management-token").read_text().strip()
        return consul.Consul(host="127.0.0.1", port=agent["port"] + self.port_offset, token=token)

    def supervisor_status(self) -> dict[str, tuple[str, int | None]]:
        """{program: (state, pid)} from this mesh's supervisord."""
        out = subprocess.run([str(BIN / "supervisorctl"), "-c", str(self.state_dir / "supervisor" / "supervisord.conf"),
                              "status"], capture_output=True, text=True).stdout
        status = {}
        for line in out.splitlines():
            parts = line.split()
            pid = re.search(r"pid (\d+)", line)
            if len(parts) >= 2:
                status[parts[0]] = (parts[1], int(pid.group(1)) if pid else None)
        return status

    def passing(self) -> dict[str, str]:
        """{service id: check status} of this mesh's registrations."""
        checks = self.consul().agent.checks()
        return {c["ServiceID"]: c["Status"] for c in checks.values() if c.get("ServiceID")}
