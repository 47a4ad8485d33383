"""How long `meshspec verify` takes over a deployed mesh: quiet, and with both cores busy.

Reads the running mesh of the current settings (MESH_STATE_DIR, MESH_PORT_OFFSET, MESH_SPEC,
MESH_RUNTIME), runs verify --runs times on a quiet machine and --runs times while one busy loop per
core runs (bench/health_load.py's hogs), and prints both side by side with the ratio, and which
check was the slowest in each. Goal (issue 14): <= 1 s wall. A benchmark, not a test: exit 0
whenever it measured, whatever the figures; 2 when it could not (no mesh answers).

    .venv/bin/python bench/verify_time.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from health_load import CannotMeasure, cpu_hogs, load  # noqa: E402  (the bench next door)

from meshspec.verify.run import verify  # noqa: E402

GOAL_SECONDS = 1.0


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
    quiet = timed_runs(mesh, runtime, args.runs, "quiet")
    with cpu_hogs(os.cpu_count() or 1):
        busy = timed_runs(mesh, runtime, args.runs, "busy ")
    print()
    print(f"{'condition':10} | {'median':>7} | {'min':>6} | {'max':>6} | goal <= {GOAL_SECONDS:.0f} s | slowest check (last run)")
    for label, r in (("quiet", quiet), ("busy", busy)):
        met = "yes" if r["median"] <= GOAL_SECONDS else "NO"
        print(f"{label:10} | {r['median']:6.2f}s | {r['min']:5.2f}s | {r['max']:5.2f}s | {met:12} | {r['slowest']}")
    print(f"busy / quiet: {busy['median'] / quiet['median']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
