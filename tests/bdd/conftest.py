"""The mesh under test for the BDD suites (features/*.feature).

By default the session DEPLOYS the shipped spec in isolation: its own state dir
(``--mesh-state-dir``, default ``<tmp>/meshspec-bdd/mesh``, stable so a converged mesh makes the
re-run a fast no-op) and ``--mesh-offset`` (default 20000); it tears it down at the end unless
``--keep-mesh``. With ``--mesh=running`` it uses the user's settings (MESH_SPEC, MESH_STATE_DIR,
MESH_PORT_OFFSET, MESH_HOSTS, CONSUL_HTTP_ADDR, MESH_RUNTIME) and neither deploys nor tears down.

Scenarios that break things work on isolated scratch meshes (``Given an isolated mesh ...``),
deployed once per session at ``--scratch-offset`` and torn down at the end unless ``--keep-mesh``.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from meshspec import settings
from meshspec.plan import Runtime
from tests.bdd.mesh_target import Target
from tests.integration.meshrun import REPO

DEFAULT_OFFSET = 20000
SCRATCH_OFFSET = 2000
BASE = Path(tempfile.gettempdir()) / "meshspec-bdd"


def pytest_addoption(parser):
    group = parser.getgroup("meshspec-bdd", "meshspec BDD suites")
    group.addoption("--mesh", choices=("deploy", "running"), default="deploy",
                    help="deploy: deploy the spec in isolation (default); running: use the mesh the "
                         "environment's MESH_* settings describe, without deploying or tearing down")
    group.addoption("--keep-mesh", action="store_true", help="do not tear down the meshes this session deployed")
    group.addoption("--mesh-spec", default=str(REPO / "mesh_spec.yaml"), help="spec deployed by --mesh=deploy")
    group.addoption("--mesh-state-dir", default=str(BASE / "mesh"), help="state dir of --mesh=deploy")
    group.addoption("--mesh-offset", type=int, default=DEFAULT_OFFSET, help="port offset of --mesh=deploy")
    group.addoption("--scratch-offset", type=int, default=SCRATCH_OFFSET,
                    help="port offset of the isolated scratch meshes that scenarios break and restore")


def pytest_configure(config):
    for name, what in (("process", "needs the process runtime (supervisord programs)"),
                       ("docker", "needs the docker runtime (the mesh's containers)"),
                       ("slow", "deploys a scratch mesh or waits on timers (tens of seconds)"),
                       ("drift", "changes reality behind meshspec's back, then restores it"),
                       ("mcp", "opens MCP sessions"), ("deploy", "runs the deploy"),
                       ("cluster", "needs a mesh on several hosts: the test cluster (meshspec cluster up)")):
        config.addinivalue_line("markers", f"{name}: {what}")


@pytest.fixture(scope="session")
def mesh_under_test(request) -> Target:
    opt = request.config.getoption
    if opt("--mesh") == "running":
        yield Target(settings.spec_path(), settings.state_dir(), settings.port_offset(), settings.configured_hosts(),
                     settings.consul_http_addr(), settings.runtime(), label="running mesh")
        return
    target = Target(opt("--mesh-spec"), opt("--mesh-state-dir"), opt("--mesh-offset"), label="isolated mesh")
    Path(target.state_dir).parent.mkdir(parents=True, exist_ok=True)
    run = target.deploy()
    try:
        assert run.code == 0, f"deploying {target.spec_path} failed:\n{run.output[-4000:]}"
        yield target
    finally:
        if not opt("--keep-mesh"):
            target.deploy("deploys/teardown.py")


@dataclass
class Scratch:
    """Isolated meshes scenarios may break; one per spec text, deployed once per session."""

    offset: int
    keep: bool
    deployed: dict[str, Target] = field(default_factory=dict)

    def get(self, spec: dict, name: str) -> Target:
        text = yaml.safe_dump(spec, sort_keys=False)
        key = hashlib.sha256(text.encode()).hexdigest()[:10]
        if key not in self.deployed:
            # short: HAProxy's runtime socket lives under it, and takes a path of 97 characters at most
            root = BASE / f"s-{key}"
            root.mkdir(parents=True, exist_ok=True)
            spec_path = root / "spec.yaml"
            spec_path.write_text(text)
            # One scratch mesh at a time: the next one may reuse the same offset and ports.
            self.close()
            target = Target(str(spec_path), str(root / "state"), self.offset, label=f"scratch mesh {name}")
            run = target.deploy()
            assert run.code == 0, f"deploying the scratch mesh {name} failed:\n{run.output[-4000:]}"
            self.deployed[key] = target
        return self.deployed[key]

    def close(self) -> None:
        if self.keep:
            return
        for key, target in list(self.deployed.items()):
            target.deploy("deploys/teardown.py")
            del self.deployed[key]


@pytest.fixture(scope="session")
def scratch_meshes(request) -> Scratch:
    scratch = Scratch(request.config.getoption("--scratch-offset"), request.config.getoption("--keep-mesh"))
    yield scratch
    scratch.close()


@dataclass
class World:
    """One scenario's state: the mesh it talks to, what it measured, and how to undo what it broke."""

    target: Target
    undo: list = field(default_factory=list)
    broke: bool = False
    last: object = None  # the last measurement (a VerifyRun, responses, a tool result, ...)
    counters: dict = field(default_factory=dict)
    session: object = None  # an open McpSession
    run_cache: object = None

    def verify(self):
        if self.run_cache is None:
            self.run_cache = self.target.verify()
        return self.run_cache

    def changed(self) -> None:
        self.run_cache = None


@pytest.fixture
def world(mesh_under_test, request) -> World:
    for runtime in Runtime:  # a scenario tagged with a runtime runs only against a mesh of that runtime
        if request.node.get_closest_marker(runtime) and mesh_under_test.runtime != runtime:
            pytest.skip(f"@{runtime} scenario; the mesh under test runs the {mesh_under_test.runtime} runtime")
    if request.node.get_closest_marker("cluster") and len({i.host for i in mesh_under_test.plan.instances}) < 2:
        pytest.skip("@cluster scenario; the mesh under test runs on one host")
    w = World(mesh_under_test)
    yield w
    if w.session is not None:
        try:
            w.session.close()
        except Exception:
            pass
    if w.broke:
        for step in reversed(w.undo):
            step()
        run = w.target.deploy()
        assert run.code == 0, f"restoring {w.target.label}: the deploy failed:\n{run.output[-3000:]}"
        after = w.target.verify()
        assert after.ok, f"{w.target.label} does not verify clean after the restore: " + \
            "; ".join(f.line for f in after.failures)
