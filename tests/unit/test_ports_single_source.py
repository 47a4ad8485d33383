"""The spec is the one place a service port is written: no other file of the repository names one."""

import re
import subprocess
from pathlib import Path

from meshspec.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
# Other specs (the malformed corpus) are data about specs, not about this mesh.
EXEMPT = ("mesh_spec.yaml", "tests/data/")


def repository_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    return [REPO / f for f in listed if not f.startswith(EXEMPT) and (REPO / f).is_file()]


def test_no_file_but_the_spec_names_a_service_port():
    spec = load_spec(REPO / "mesh_spec.yaml")
    ports = {p for s in spec.services for p in (s.port, *s.ports.values())}
    pattern = re.compile(r"(?<![\d.])(" + "|".join(map(str, sorted(ports))) + r")(?![\d])")
    offenders = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert offenders == []
