"""`meshspec verify` on a real small mesh: it passes when converged, and each drift is caught by name.

One isolated mesh (its own state dir, port offset 4000) for the module. Each drift test changes
reality behind meshspec's back, asserts verify's one-line reason, then restores the mesh (the
deploy re-run) and asserts verify passes again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import httpx
import pytest

from meshspec.converge.mesh import load_mesh
from meshspec.plan.hosts import LOCAL, LOOPBACK, Host
from meshspec.render.registrations import registration
from meshspec.verify.checks import Port
from meshspec.verify.run import VerifyRun, verify, verify_gone
from tests.integration.meshrun import BIN, REPO, Mesh
from tests.support import wait_until

pytestmark = pytest.mark.integration
OFFSET = 4000
SMALL = REPO / "tests" / "data" / "specs" / "small.yaml"
PLAIN_HTTP = REPO / "tests" / "probes" / "servers" / "plain_http.py"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    root = tmp_path_factory.mktemp("drift")
    spec = root / "spec.yaml"
    spec.write_text(SMALL.read_text())
    m = Mesh(root / "state", OFFSET, spec)
    run = m.deploy()
    try:
        assert run.code == 0, run.output
        yield m
    finally:
        m.deploy("deploys/teardown.py")


def planned(mesh: Mesh):
    """The same mesh (plan and registry) the deploy converged."""
    return load_mesh(str(mesh.spec_path), [Host(LOCAL, LOOPBACK)], OFFSET, str(mesh.state_dir), None)


def instance(mesh: Mesh, instance_id: str):
    return next(i for i in planned(mesh).plan.instances if i.id == instance_id)


def run_verify(mesh: Mesh) -> VerifyRun:
    return verify(planned(mesh), spec_path=str(mesh.spec_path))


def failed(run: VerifyRun) -> dict[str, str]:
    return {c.id: c.reason for c in run.failures}


def cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess:
    """`meshspec verify|report ...` as a process (the commands' own module, before cli.py registers them)."""
    return subprocess.run([sys.executable, "-m", "meshspec.verify.cli", *args], cwd=REPO, env=mesh.env(),
                          capture_output=True, text=True, timeout=120)


def supervisorctl(mesh: Mesh, *args: str) -> None:
    conf = mesh.state_dir / "supervisor" / "supervisord.conf"
    subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def restore(mesh):
    """Undo steps the test registers, then re-run the deploy; the mesh must verify clean again."""
    undo: list = []
    yield undo
    for step in reversed(undo):
        step()
    run = mesh.deploy()
    assert run.code == 0, run.output
    after = run_verify(mesh)
    assert after.ok, failed(after)


# --- converged ---------------------------------------------------------------------------------


def test_a_converged_mesh_verifies_clean_in_parallel(mesh, tmp_path):
    run = run_verify(mesh)
    assert run.ok, failed(run)
    ids = {i.id for i in planned(mesh).plan.instances}
    for check in ("running", "listening", "healthy", "registered", "passing"):
        assert {c.subject for c in run.checks if c.check == check and c.status == "passed"} == ids
    assert not [c for c in run.checks if c.check == "routable"]  # small.yaml has no proxy: nothing is routed
    assert run.verdict == "PASSING" and not run.skips
    counts = next(c for c in run.checks if c.id == "mesh/counts")
    assert counts.detail == {"planned": 5, "running": 5, "registered": 5, "passing": 5, "on_this_host": 5}
    files = next(c for c in run.checks if c.id == "files-local-0/healthy")
    assert files.detail["tool_count"] >= 1
    # In parallel: the run takes less than its checks one after another.
    assert run.duration_ms < sum(c.duration_ms for c in run.checks)

    junit = tmp_path / "verify.xml"
    done = cli(mesh, "verify", "--json", "--junit", str(junit))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["ok"] is True and data["summary"]["failed"] == 0
    cases = ET.parse(junit).getroot().find("testsuite").findall("testcase")
    assert [f"{c.get('classname')}/{c.get('name')}" for c in cases] == [c["id"] for c in data["checks"]]


# --- drifts ------------------------------------------------------------------------------------


def test_a_stopped_service_is_caught(mesh, restore):
    web1 = instance(mesh, "web-local-1")
    supervisorctl(mesh, "stop", web1.id)
    # The deploy starts programs whose files change, not ones stopped by hand: start it back first.
    restore.append(lambda: supervisorctl(mesh, "start", web1.id))

    found = failed(run_verify(mesh))
    assert found["web-local-1/running"] == "program web-local-1 is STOPPED"
    assert found["web-local-1/listening"].startswith(f"nothing listens at 127.0.0.1:{web1.port} (")
    assert found["web-local-1/healthy"].startswith(f"GET http://127.0.0.1:{web1.port}/index.html failed:")
    assert {k.split("/")[0] for k in found} <= {"web-local-1", "mesh"}


def test_an_mcp_port_taken_by_a_plain_http_server_is_caught(mesh, restore, tmp_path):
    files = instance(mesh, "files-local-0")
    supervisorctl(mesh, "stop", files.id)
    impostor = subprocess.Popen([sys.executable, str(PLAIN_HTTP), "--port", str(files.port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_impostor():
        os.kill(impostor.pid, signal.SIGTERM)
        impostor.wait(timeout=10)
        supervisorctl(mesh, "start", files.id)

    restore.append(stop_impostor)
    wait_until(lambda: _answers(f"http://127.0.0.1:{files.port}/health"), what="the plain HTTP server")

    # Who answered, then what it answered: the impostor by pid, and the handshake it could not do.
    held = f"127.0.0.1:{files.port} is held by pid {impostor.pid} ({os.path.basename(sys.executable)} {PLAIN_HTTP.name}"
    said = f"not by program files-local-0 (program files-local-0 is STOPPED); the probe: 127.0.0.1:{files.port}" \
           " answers HTTP 404 but not MCP initialize"
    found = failed(run_verify(mesh))
    assert found["files-local-0/healthy"].startswith(held) and found["files-local-0/healthy"].endswith(said), found
    assert found["files-local-0/running"] == "program files-local-0 is STOPPED"
    assert "files-local-0/listening" not in found  # the port listens: the handshake and its holder tell
    done = cli(mesh, "verify")
    assert done.returncode == 1
    assert any(line.startswith(f"files: {held}") and line.endswith(said) for line in done.stderr.splitlines()), done.stderr

    # The host's checker runs the same probe: the Consul check turns critical, naming the impostor.
    def consul_check() -> dict:
        return mesh.consul().agent.checks().get("service:files-local-0") or {}
    # Its first failed probe may predate the impostor (nothing listened yet: "refused"); a later one names it.
    names = f"is held by pid {impostor.pid} ("
    check = wait_until(lambda: (c := consul_check()).get("Status") == "critical" and names in c.get("Output", "") and c,
                       30, interval=0.5, what="the Consul check critical, naming the impostor")
    assert check["Output"].startswith(f"127.0.0.1:{files.port} {names}"), check


def test_an_instance_registered_at_a_dead_port_is_caught(mesh, restore):
    m = planned(mesh)
    web0 = instance(mesh, "web-local-0")
    body = registration(m.plan, web0, "process")
    moved = body["Port"] + 1
    assert not Port("127.0.0.1", moved).is_listening  # the precondition of this drift
    _register(mesh, body | {"Port": moved})

    found = failed(run_verify(mesh))
    assert found == {"web-local-0/registered":
                     f"web-local-0 registered at 127.0.0.1:{moved} where nothing listens, declared 127.0.0.1:{web0.port}"}


def test_a_tag_changed_behind_meshspecs_back_is_caught(mesh, restore):
    m = planned(mesh)
    body = registration(m.plan, instance(mesh, "web-local-1"), "process")
    _register(mesh, body | {"Tags": ["canary"]})

    found = failed(run_verify(mesh))
    assert found == {"web-local-1/registered": "web-local-1 registered with tags ['canary'], declared ['web']"}


def test_an_extra_registration_nobody_declared_is_caught(mesh, restore):
    agent = mesh.consul().agent
    agent.service.register("intruder", service_id="intruder-1", address="127.0.0.1", port=9, tags=["x"])
    restore.append(lambda: mesh.consul().agent.service.deregister("intruder-1"))

    run = run_verify(mesh)
    assert failed(run) == {"mesh/no-extra-registrations":
                           "unexpected registration not in the spec: intruder-1 (service intruder at 127.0.0.1:9)"}
    assert next(c for c in run.checks if c.id == "mesh/counts").status == "passed"


# --- the report --------------------------------------------------------------------------------


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self._row, self._in = [], None, False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._in = True
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr":
            self.rows.append(self._row)
        elif tag in ("td", "th"):
            self._in = False

    def handle_data(self, data):
        if self._in:
            self._row[-1] += data


def test_the_report_numbers_are_the_verify_json_numbers(mesh, tmp_path):
    source = tmp_path / "verify.json"
    done = cli(mesh, "verify", "--json")
    assert done.returncode == 0, done.stderr
    source.write_text(done.stdout)
    data = json.loads(done.stdout)
    out = tmp_path / "report"
    done = cli(mesh, "report", str(source), "--out-dir", str(out))
    assert done.returncode == 0, done.stderr
    md, page = (out / "status.md").read_text(), (out / "status.html").read_text()

    counts = next(c for c in data["checks"] if c["id"] == "mesh/counts")
    expected_summary = {
        "instances planned": counts["detail"]["planned"], "programs running": counts["detail"]["running"],
        "instances registered": counts["detail"]["registered"], "Consul checks passing": counts["detail"]["passing"],
        "checks run": len(data["checks"]), "checks passed": data["summary"]["passed"],
        "checks failed": data["summary"]["failed"], "checks skipped": data["summary"]["skipped"],
    }
    md_rows = {r[0]: r[1:] for r in (_md_row(line) for line in md.splitlines()) if r}
    parser = _Cells()
    parser.feed(page)
    html_rows = {r[0]: r[1:] for r in parser.rows if r}
    for label, number in expected_summary.items():
        assert md_rows[label][0] == str(number) and html_rows[label][0] == str(number), label
    for c in data["checks"]:  # every check with its own start and time, in both formats
        want = [{"passed": "ok", "failed": "FAIL", "skipped": "skip"}[c["status"]], c["started_at"],
                f"{c['duration_ms']:.1f}", c["reason"]]
        assert md_rows[c["id"]] == want and html_rows[c["id"]] == want, c["id"]
    stamp = f"from {data['started_at']} to {data['finished_at']} ({data['duration_ms']:.1f} ms)"
    assert stamp in md and stamp in page
    tools = next(c for c in data["checks"] if c["id"] == "files-local-0/healthy")["detail"]["tool_count"]
    assert html_rows["files-local-0"][-1] == md_rows["files-local-0"][-1] == f"{tools} tools"


# --- helpers -----------------------------------------------------------------------------------


def _md_row(line: str) -> list[str] | None:
    if not line.startswith("| ") or line.startswith("|---"):
        return None
    return [cell.replace("\\|", "|") for cell in re.split(r" (?<!\\)\| ", line[2:-2])]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _register(mesh: Mesh, body: dict) -> None:
    """Re-register an instance behind meshspec's back, as py-consul does it."""
    mesh.consul().agent.service.register(
        name=body["Name"], service_id=body["ID"], address=body["Address"], port=body["Port"],
        tags=body["Tags"], meta=body["Meta"], check=body["Check"], replace_existing_checks=True,
    )


def test_verify_gone_fails_on_a_running_mesh_naming_what_remains(mesh):
    """`meshspec verify --gone` (what `make test` runs after `make down`) cannot pass a live mesh."""
    run = verify_gone(planned(mesh))
    by_id = {c.id: c for c in run.checks}
    assert not run.ok
    for inst in planned(mesh).plan.instances:
        assert by_id[f"{inst.id}/port-free"].status == "failed", by_id[f"{inst.id}/port-free"]
    assert by_id["mesh/no-registrations"].reason.startswith("registered still: ")
    assert by_id["mesh/no-programs"].reason.startswith("supervisord still runs ")
    assert by_id["mesh/no-state"].reason.startswith("left: ")
