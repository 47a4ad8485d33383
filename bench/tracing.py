"""Tracing bench: what OpenTelemetry costs meshspec's own services, side by side in ONE run.

Against the running mesh of the current settings (MESH_STATE_DIR, MESH_PORT_OFFSET, MESH_SPEC),
straight to one instance (not through the proxy, whose per-client rate limit would cap a single
flooding client): wrk sends every request with a fresh W3C traceparent whose sampled flag is set
for 0%, 10% or 100% of them, which the service follows (its sampler is parent-based). Rounds
alternate the three so all see the same machine load; the median of each is printed with its
throughput and p99 as a ratio of 0%'s. Two targets: the frontend's page (a static file: the
worst case, nearly all of the request is the tracing) and a semantic-search query (its server
span, the embeddings call's client span and the embeddings service's own: a request's usual
shape, crossing processes).

    MESH_STATE_DIR=... MESH_PORT_OFFSET=... .venv/bin/python bench/tracing.py [--seconds 5] [--rounds 3]
Needs: wrk (Debian package) and a deployed mesh whose spec names a trace store.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

from meshspec.converge.mesh import configured_mesh

SAMPLINGS = (0.0, 0.1, 1.0)
# Each request a new trace: a random trace and parent id, sampled with probability SAMPLED.
SCRIPT = """
local ratio = tonumber(os.getenv("SAMPLED"))
local function hex(n) local t = {} for i = 1, n do t[i] = string.format("%x", math.random(0, 15)) end return table.concat(t) end
function setup(thread) thread:set("seed", math.random(1, 1000000000)) end
function init(args) math.randomseed(seed) end
function request()
  local flags = math.random() < ratio and "01" or "00"
  return wrk.format("GET", nil, {traceparent = "00-" .. hex(32) .. "-" .. hex(16) .. "-" .. flags})
end
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, script: Path, sampled: float, seconds: int) -> tuple[float, float]:
    """(requests/s, p99 ms) of one wrk run; every non-2xx answer fails the bench."""
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         env={**os.environ, "SAMPLED": str(sampled)}, capture_output=True, text=True, check=True).stdout
    assert "Non-2xx" not in out, out
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out).groups()
    return rate, float(value) * UNITS[unit]


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--seconds", type=int, default=5)
    args.add_argument("--rounds", type=int, default=3)
    opts = args.parse_args()
    plan = configured_mesh().plan
    if plan.spec.tracing.store is None:
        raise SystemExit("the spec names no trace store (tracing.store): nothing to measure")
    targets = {name: f"http://{i.address}:{i.port}{path}" for name, path in
               (("frontend", "/"), ("semantic-search", "/search?q=tracing+bench&k=1")) for i in plan.instances_of(name)[:1]}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(SCRIPT)
        script.flush()
        for name, url in targets.items():
            runs: dict[float, list[tuple[float, float]]] = {s: [] for s in SAMPLINGS}
            for r in range(opts.rounds):
                for sampled in SAMPLINGS:
                    runs[sampled].append(wrk(url, Path(script.name), sampled, opts.seconds))
                print(f"{name}: round {r + 1}/{opts.rounds} done", flush=True)
            base_rate = statistics.median(x for x, _ in runs[0.0])
            base_p99 = statistics.median(y for _, y in runs[0.0])
            for sampled in SAMPLINGS:
                rate, p99 = statistics.median(x for x, _ in runs[sampled]), statistics.median(y for _, y in runs[sampled])
                print(f"{name} {url.split('/', 3)[-1] or '/'} sampled {sampled:4.0%}: {rate:7.0f} req/s "
                      f"({rate / base_rate:.2f}x of 0%), p99 {p99:6.2f} ms ({p99 / base_p99:.2f}x of 0%)")


if __name__ == "__main__":
    main()
