"""How long `meshspec verify` takes over a deployed mesh: quiet, and with both cores busy.

Reads the running mesh of the current settings (MESH_STATE_DIR, MESH_PORT_OFFSET, MESH_SPEC,
MESH_RUNTIME), runs verify --runs times on a quiet machine and --runs times while one busy loop per
core runs (bench/health_load.py's hogs), each time both in this process (imports paid once) and as
the `meshspec verify` command (a new process each run), and prints them side by side with the
ratios, and which check was the slowest. Goal (issue 14): <= 1 s wall. A benchmark, not a test: exit 0
whenever it measured, whatever the figures; 2 when it could not (no mesh answers).

    .venv/bin/python bench/verify_time.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from health_load import CannotMeasure, cpu_hogs, load  # noqa: E402  (the bench next door)

from meshspec.verify.run import verify  # noqa: E402

GOAL_SECONDS = 1.0
MESHSPEC = Path(sys.executable).parent / "meshspec"


def timed_runs(mesh, runtime, runs: int, label: str) -> dict:
    walls, slowest = [], []
    for n in range(1, runs + 1):
        started = time.perf_counter()
        run = verify(mesh, runtime=runtime)
        walls.append(time.perf_counter() - started)
        top = max(run.checks, key=lambda c: c.duration_ms)
        slowest.append(f"{top.id} {top.duration_ms:.0f} ms")
        print(f"  {label} run {n}/{runs}: {walls[-1]:.2f} s, {run.verdict}, {len(run.checks)} checks;"
              f" slowest {slowest[-1]}", flush=True)
    return {"median": statistics.median(walls), "min": min(walls), "max": max(walls), "slowest": slowest[-1]}


def command_runs(runs: int, label: str) -> dict:
    """`meshspec verify` as a user runs it: a new process each time, which pays Python's start and
    meshspec's imports, and imports each probe's protocol library on its first use."""
    walls, verdicts = [], []
    for n in range(1, runs + 1):
        started = time.perf_counter()
        done = subprocess.run([str(MESHSPEC), "verify"], capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        verdicts.append((done.stdout.strip().splitlines() or ["(no output)"])[-1].split(":")[0])
        print(f"  {label} command {n}/{runs}: {walls[-1]:.2f} s, exit {done.returncode}, {verdicts[-1]}", flush=True)
    return {"median": statistics.median(walls), "min": min(walls), "max": max(walls), "slowest": "(whole command)"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="verify runs per condition (default 5)")
    args = parser.parse_args()
    try:
        mesh, runtime = load()
    except CannotMeasure as err:
        print(f"verify_time: not measured: {err}", file=sys.stderr)
        return 2
    print(f"mesh {mesh.plan.spec.mesh.name} at {mesh.plan.layout.root}: {len(mesh.plan.instances)} instances;"
          f" machine: {os.cpu_count()} cores", flush=True)
    rows = {"quiet": timed_runs(mesh, runtime, args.runs, "quiet"),
            "quiet, command": command_runs(args.runs, "quiet")}
    with cpu_hogs(os.cpu_count() or 1):
        rows["busy"] = timed_runs(mesh, runtime, args.runs, "busy ")
        rows["busy, command"] = command_runs(args.runs, "busy ")
    print()
    print(f"{'condition':15} | {'median':>7} | {'min':>6} | {'max':>6} | goal <= {GOAL_SECONDS:.0f} s | slowest check (last run)")
    for label, r in rows.items():
        met = "yes" if r["median"] <= GOAL_SECONDS else "NO"
        print(f"{label:15} | {r['median']:6.2f}s | {r['min']:5.2f}s | {r['max']:5.2f}s | {met:12} | {r['slowest']}")
    print(f"busy / quiet: {rows['busy']['median'] / rows['quiet']['median']:.1f}x (in one process), "
          f"{rows['busy, command']['median'] / rows['quiet, command']['median']:.1f}x (the command); "
          f"the command / one process, quiet: {rows['quiet, command']['median'] / rows['quiet']['median']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
