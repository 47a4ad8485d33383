"""Run a pyinfra deploy and refuse a run that touched nothing.

pyinfra exits 0 when its inventory is empty or unknown and nothing ran; a deploy that
converged zero hosts or ran zero operations is a failure here. pyinfra runs as a
subprocess: it gevent-patches its own process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunTotals:
    hosts: int
    operations: int


class NothingRan(RuntimeError):
    pass


_TABLES = ("--> Results:", "--> Detected changes:")  # a run's and a --dry run's


def parse_totals(output: str) -> RunTotals:
    """Hosts connected, and operation rows in pyinfra's results (or --dry changes) table."""
    hosts = set(re.findall(r"^\s+\[(.+?)\] Connected", output, re.MULTILINE))
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() in _TABLES), None)
    operations = 0
    for line in lines[start + 2:] if start is not None else []:  # past the header row
        name = re.split(r"\s{2,}", line.strip())[0]
        if not name or line.startswith("-->"):
            break
        operations += name != "Grand total"
    return RunTotals(len(hosts), operations)


def run_deploy(deploy: Path, inventory: Path, extra: list[str]) -> int:
    """Run pyinfra, echo its output live, and fail on a run that converged nothing."""
    confirm = [] if "--dry" in extra else ["-y"]  # with -y, --dry skips change detection
    cmd = [str(Path(sys.executable).parent / "pyinfra"), *confirm, str(inventory), str(deploy), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    captured = []
    for line in proc.stdout:
        sys.stdout.write(line)
        captured.append(line)
    code = proc.wait()
    if code != 0:
        return code
    totals = parse_totals("".join(captured))
    if totals.hosts == 0 or totals.operations == 0:
        raise NothingRan(
            f"pyinfra exited 0 but converged {totals.hosts} host(s) with {totals.operations} operation(s): "
            f"check the inventory {inventory} (a Python file named exactly 'inventory') and the deploy {deploy}"
        )
    return 0
