"""Converge benchmark: cold converge and no-op re-run of a 41-instance mesh, side by side.

The mesh is the agent plus 40 instances of Python's HTTP file server, so that it measures the
converge machinery (supervisord programs, registrations, health) and not package downloads:
"cold" means no state and no running process, with the programs already installed.

    .venv/bin/python bench/converge.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MESHSPEC = str(Path(sys.executable).parent / "meshspec")
OFFSET = 7000  # keeps the bench mesh apart from a running one


def spec(services: int) -> dict:
    agent = {
        "name": "consul", "kind": "core", "description": "the embedded agent", "port": 18600,
        "process": {"command": ["{meshspec}", "agent", "--bind", "{address}", "--port", "{port}", "--data-dir",
                                "{state_dir}", "--token-file", "{consul.token_file}"]},
        "health": {"http": {"path": "/v1/status/leader"}}, "routing": {"enabled": False},
    }
    web = [
        {"name": f"web{i:02d}", "kind": "core", "description": "Python's HTTP file server", "port": 18700 + i,
         "process": {"command": ["python3", "-m", "http.server", "{port}", "--bind", "{address}", "--directory", "{state_dir}"],
                     "stop_signal": "INT"},
         "health": {"http": {"path": "/"}}}
        for i in range(services - 1)
    ]
    return {"version": 1, "mesh": {"name": "bench"}, "proxy": {"service": None},
            "defaults": {"health": {"interval": "1s", "timeout": "1s"}}, "services": [agent, *web]}


def deploy(env: dict, deploy_file: str = "deploys/mesh.py") -> float:
    started = time.perf_counter()
    result = subprocess.run([MESHSPEC, "deploy", deploy_file], cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{deploy_file} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "bench.yaml"
        spec_file.write_text(yaml.safe_dump(spec(41)))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "CONSUL_HTTP"))}
        env |= {"MESH_SPEC": str(spec_file), "MESH_STATE_DIR": f"{tmp}/state", "MESH_PORT_OFFSET": str(OFFSET)}
        try:
            cold = deploy(env)
            noop = deploy(env)
        finally:
            deploy(env, "deploys/teardown.py")
    print("converge, 41 instances (agent + 40 HTTP servers), process runtime, every check passing at the end")
    print(f"  cold converge:  {cold:6.2f} s   (goal <= 30 s)")
    print(f"  no-op re-run:   {noop:6.2f} s   (goal <= 3 s)")
    print(f"  cold / no-op:   {cold / noop:6.1f}x")


if __name__ == "__main__":
    main()
