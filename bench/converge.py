"""Converge benchmark: cold converge and no-op re-run of a 41-instance mesh, with the process
and the docker runtime side by side, and the docker runtime's image build, cold and cached.

The mesh is the agent plus 40 instances of Python's HTTP file server, so that it measures the
converge machinery (programs or containers, registrations, health) and not package downloads:
"cold" means no state and no running process, with the programs installed and, for docker, the
images built. The cold image build runs the same recipes as the deploy's (mmdebstrap + import,
then meshspec's layer) under bench tags, so it never removes an image a mesh uses.

    .venv/bin/python bench/converge.py            (needs docker.io and mmdebstrap for the docker rows)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from meshspec.converge import builds, engine
from meshspec.converge.source import source_digest, source_root
from meshspec.render import images

REPO = Path(__file__).resolve().parents[1]
MESHSPEC = str(Path(sys.executable).parent / "meshspec")
OFFSET = 7000  # keeps the bench mesh apart from a running one


def spec(services: int) -> dict:
    agent = {
        "name": "consul", "kind": "core", "description": "the embedded agent", "port": 18600,
        "process": {"command": ["{meshspec}", "agent", "--bind", "{address}", "--port", "{port}", "--data-dir",
                                "{state_dir}", "--token-file", "{consul.management_token_file}"]},
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


def converge(env: dict) -> tuple[float, float]:
    """(cold, no-op) seconds, then teardown."""
    try:
        return deploy(env), deploy(env)
    finally:
        deploy(env, "deploys/teardown.py")


def image_build() -> tuple[float, float]:
    """(cold, cached) seconds to build the base and meshspec's layer from their recipes."""
    base = images.BaseImage(node=builds.host_node())
    layer = images.meshspec_layer(base, source_digest(source_root()))
    bench_base = f"meshspec-bench/base:{base.tag.split(':')[1]}"
    bench_layer = images.Layer("meshspec-bench/meshspec", bench_base, layer.script, layer.inputs)
    client = engine.client(timeout=builds.BUILD_TIMEOUT)
    try:
        started = time.perf_counter()
        builds.build_base(base, tag=bench_base)
        builds.build_layer(bench_layer, source_root())
        cold = time.perf_counter() - started
        started = time.perf_counter()
        builds.build_base(base, tag=bench_base)
        builds.build_layer(bench_layer, source_root())
        return cold, time.perf_counter() - started
    finally:
        for tag in (bench_layer.tag, bench_base):
            client.images.remove(tag, force=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "bench.yaml"
        spec_file.write_text(yaml.safe_dump(spec(41)))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "CONSUL_HTTP"))}
        env |= {"MESH_SPEC": str(spec_file), "MESH_STATE_DIR": f"{tmp}/state", "MESH_PORT_OFFSET": str(OFFSET)}
        cold, noop = converge(env)
        docker = shutil.which("dockerd") and shutil.which("mmdebstrap")
        if docker:
            if not engine.answering():
                engine.start_engine()
            build_cold, build_cached = image_build()
            d_cold, d_noop = converge(env | {"MESH_STATE_DIR": f"{tmp}/docker", "MESH_RUNTIME": "docker"})
    print("converge, 41 instances (agent + 40 HTTP servers), every check passing at the end")
    print(f"  process: cold converge {cold:6.2f} s (goal <= 30 s), no-op re-run {noop:5.2f} s (goal <= 3 s),"
          f" cold / no-op {cold / noop:4.1f}x")
    if not docker:
        print("  docker:  not measured (needs docker.io and mmdebstrap: make deploy with MESH_RUNTIME=docker installs them)")
        return
    print(f"  docker:  cold converge {d_cold:6.2f} s (images built), no-op re-run {d_noop:5.2f} s,"
          f" cold / no-op {d_cold / d_noop:4.1f}x")
    print(f"  docker / process: cold converge {d_cold / cold:4.2f}x, no-op {d_noop / noop:4.2f}x")
    print(f"  image build (base via mmdebstrap + meshspec's layer): cold {build_cold:6.1f} s,"
          f" cached {build_cached:5.2f} s, cold / cached {build_cold / build_cached:,.0f}x")


if __name__ == "__main__":
    main()
