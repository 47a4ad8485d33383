"""The shipped spec's probes, run against the real programs they prove (not the mesh's supervised
instances): the plan at an offset beside any running mesh, and how to start a program for a test."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from meshspec.plan import Host, Plan, make_plan
from meshspec.render.probes import probe
from meshspec.spec.loader import load_spec
from tests.conftest import REPO
from tests.support import listening, wait_until

OFFSET = 31000  # the shipped ports + this: beside a running default mesh and the test mesh (20000)
SPEC = load_spec(REPO / "mesh_spec.yaml")
PLAN = make_plan(SPEC, [Host("@local", "127.0.0.1")], port_offset=OFFSET)


def plan_in(state_dir: Path) -> Plan:
    """The same plan, keeping its state (pidfiles, configs' paths) under `state_dir`."""
    return make_plan(SPEC, [Host("@local", "127.0.0.1")], port_offset=OFFSET, state_dir=str(state_dir))


def shipped_probe(service: str, port: int | None = None, plan: Plan = PLAN) -> dict:
    """The shipped spec's probe of `service`, without the owner proof (these programs are not the
    mesh's supervised instances); with `port`, every request aimed at that port instead."""
    found = dataclasses.asdict(probe(plan, plan.instances_of(service)[0]))
    found["owner"] = None
    if port is not None and found["url"] is None:
        found["port"] = port  # a protocol's probe: address and port
    elif port is not None:
        def aim(request: dict) -> dict:
            return {**request, "url": urlsplit(request["url"])._replace(netloc=f"127.0.0.1:{port}").geturl()}
        found = {**aim(found), "before": [aim(s) for s in found["before"]], "after": [aim(s) for s in found["after"]]}
    return found


def start(argv: list[str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_until(lambda: listening(port) or proc.poll() is not None, 15, what=f"{argv[0]} listening")
    assert proc.poll() is None, log.read_text()[-2000:]
    return proc
