"""Plan -> the host's checker: the checks file it reads and its supervisord program. Pure.

One checker per host runs the probe of every instance on that host (render.probes) and reports it
to Consul as a TTL check update (runtime.checker); the registrations carry the matching TTL checks
(render.registrations).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import PurePosixPath

from meshspec.common.digest import digest_text
from meshspec.plan import Instance, Plan, Runtime
from meshspec.render.probes import probe
from meshspec.render.programs import Program, meshspec_version, section
from meshspec.spec.resolve import effective_health_timing

CHECKER = "mesh-checker"


def check_id(inst: Instance) -> str:
    return f"service:{inst.id}"


def checker_check(plan: Plan, inst: Instance, runtime: Runtime) -> dict:
    """What the checker runs for one instance, how often, and how it damps flaps."""
    timing = effective_health_timing(plan.spec, plan.service(inst.service))
    return {
        "check_id": check_id(inst),
        "probe": dataclasses.asdict(probe(plan, inst, runtime)),
        "interval_ms": timing.interval,
        "timeout_ms": timing.timeout,
        "success_before_passing": timing.success_before_passing,
        "failures_before_critical": timing.failures_before_critical,
    }


def checks_file(plan: Plan, instances: list[Instance], runtime: Runtime) -> str:
    checks = [checker_check(plan, i, runtime) for i in instances]
    consul = plan.consul_addr_for(instances[0].host) if instances else plan.consul_addr
    return json.dumps({"consul": consul, "checks": checks}, indent=1, sort_keys=True) + "\n"


def checker_program(plan: Plan, instances: list[Instance], runtime: Runtime, bin_dir: str) -> Program:
    """The checker under the mesh's supervisord, from the host's meshspec in `bin_dir` (with the
    docker runtime, the plan's meshspec is the one inside the images); its revision is the checks
    file's digest, so a changed file restarts it."""
    layout = plan.layout
    argv = [str(PurePosixPath(bin_dir) / "meshspec-checker"),
            "--checks", str(layout.checker_file), "--token-file", str(layout.checker_token_file),
            "--metrics-dir", str(layout.checker_metrics_dir)]
    rev = f"{meshspec_version(plan)}+{digest_text(checks_file(plan, instances, runtime))}"
    return section(layout, CHECKER, argv, str(layout.checker_file.parent), rev, stop_timeout_ms=5_000)
