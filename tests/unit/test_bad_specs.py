"""Every malformed spec of tests/data/bad_specs is refused with exactly the problems its header lists.

Each file starts with `# expect: LINE:COL KEY.PATH: SUBSTRING` lines: the position of the offending
token in that file, the key path the problem is reported under, and a piece of its message.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BAD_SPECS = sorted((ROOT / "tests" / "data" / "bad_specs").glob("*.yaml"))
MESHSPEC = Path(sys.executable).parent / "meshspec"

EXPECT = re.compile(r"^# expect: (\d+):(\d+) (\S+): (.+)$")
REPORTED = re.compile(r"^(\d+):(\d+): (\S+): (.*)$")
SUMMARY = re.compile(r"^(\d+) problem\(s\); nothing was changed$")


def _env() -> dict[str, str]:
    """The environment without the settings that change ports or hosts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}


def _validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MESHSPEC), "validate", str(path)], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120
    )


def _expectations(path: Path) -> list[tuple[int, int, str, str]]:
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("# expect:"):
            break
        m = EXPECT.match(line)
        assert m, f"{path.name}: malformed header {line!r}"
        found.append((int(m[1]), int(m[2]), m[3], m[4]))
    return found


def _reported(path: Path, stderr: str) -> tuple[list[tuple[int, int, str, str]], list[str]]:
    """(line, col, key, message) of every problem line, and the lines that are not problems."""
    prefix = f"{path}:"
    problems, other = [], []
    for line in stderr.splitlines():
        m = REPORTED.match(line.removeprefix(prefix)) if line.startswith(prefix) else None
        if m:
            problems.append((int(m[1]), int(m[2]), m[3], m[4]))
        else:
            other.append(line)
    return problems, other


def test_corpus_is_large_enough():
    assert len(BAD_SPECS) >= 30


@pytest.mark.parametrize("path", BAD_SPECS, ids=[p.name for p in BAD_SPECS])
def test_bad_spec_is_refused_with_its_problems(path: Path):
    expected = _expectations(path)
    assert expected, f"{path.name} has no '# expect:' header"

    result = _validate(path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, output

    problems, other = _reported(path, result.stderr)
    assert len(other) == 1 and (m := SUMMARY.match(other[0])), f"unexpected output:\n{result.stderr}"
    assert int(m[1]) == len(problems)

    got = Counter((line, col, key) for line, col, key, _ in problems)
    want = Counter((line, col, key) for line, col, key, _ in expected)
    assert got == want, f"reported:\n{result.stderr}"
    for line, col, key, substring in expected:
        messages = [msg for l, c, k, msg in problems if (l, c, k) == (line, col, key)]
        assert any(substring in msg for msg in messages), f"{line}:{col} {key}: {substring!r} not in {messages}"


def test_shipped_spec_is_valid():
    result = _validate(ROOT / "mesh_spec.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "41 services: 19 mcp, 8 core, 3 database, 3 ai, 8 monitoring" in result.stdout.splitlines()
    assert "replicas: http-fetch x2, http x2, backend-api x3, mcp-gateway x2, semantic-search x2" in result.stdout
