"""`meshspec deploy` refuses a pyinfra run that converged no host or ran no operation."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

MESHSPEC = str(Path(sys.executable).parent / "meshspec")
SPEC = str(Path(__file__).resolve().parents[2] / "mesh_spec.yaml")  # meshspec deploy validates it first
ONE_OPERATION = 'from pyinfra.operations import files\nfiles.directory(name="make dir", path="{dir}")\n'


def deploy(tmp_path: Path, hosts: str, body: str, *extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "inventory").write_text(f"hosts = {hosts}\n")
    (tmp_path / "d.py").write_text(body.format(dir=tmp_path / "made"))
    env = os.environ | {"MESH_SPEC": SPEC}
    return subprocess.run([MESHSPEC, "deploy", "d.py", *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("extra", [(), ("--dry",)])
def test_a_run_on_a_host_with_operations_passes(tmp_path, extra):
    result = deploy(tmp_path, '["@local"]', ONE_OPERATION, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "made").is_dir() != bool(extra)  # --dry changes nothing


@pytest.mark.parametrize("extra", [(), ("--dry",)])
def test_an_empty_inventory_fails_although_pyinfra_exits_0(tmp_path, extra):
    result = deploy(tmp_path, "[]", ONE_OPERATION, *extra)
    assert result.returncode == 2
    assert "converged 0 host(s) with 0 operation(s)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_deploy_without_operations_fails(tmp_path):
    result = deploy(tmp_path, '["@local"]', "pass\n")
    assert result.returncode == 2
    assert "converged 1 host(s) with 0 operation(s)" in result.stderr
