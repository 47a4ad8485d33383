"""The pure parts of `meshspec verify`: registration diffs, the snapshot classes, JSON, JUnit, the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import Future
from pathlib import Path

import pytest

from meshspec.plan import make_plan
from meshspec.plan.hosts import Host
from meshspec.render.registrations import differences, registration
from meshspec.runtime.probes.protocols import Result
from meshspec.spec import parse_spec
from meshspec.verify.checks import (
    Check,
    Port,
    Program,
    Registration,
    Registrations,
    Route,
    Supervisor,
    in_container,
    processes_in_containers,
)
from meshspec.verify.output import to_json, to_junit, to_tap
from meshspec.verify.report import sections, to_html, to_markdown, write_reports
from meshspec.verify.run import CheckResult, VerifyRun, not_routed, outcome, port_free, same_server, verdict_of
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]

SPEC = """
version: 1
mesh: {name: t}
services:
  - {name: consul, kind: core, description: r, port: 18500, process: {command: [agent]}, health: {http: {path: /v1/status/leader}}, routing: {enabled: false}}
  - {name: mesh-proxy, kind: core, description: p, port: 18000, ports: {stats: 18001}, process: {command: [haproxy]}, health: {tcp: {}}, routing: {enabled: false}}
  - {name: web, kind: core, description: w, port: 18080, replicas: 2, tags: [web], process: {command: [x]}, health: {http: {path: /index.html}}}
  - {name: files, kind: mcp, description: f, port: 18303, process: {command: [x]}, health: {mcp: {min_tools: 2}}}
  - {name: redis, kind: database, description: kv, port: 18379, process: {command: [x]}, health: {command: [redis-cli, ping]}, routing: {mode: tcp, retries: {retry_on: [conn-failure]}}}
"""


def _plan(spec: str = SPEC):
    return make_plan(parse_spec(spec), [Host("@local", "127.0.0.1")], port_offset=0, meshspec_bin="/m/bin/meshspec")


def _expected(name: str = "web", replica: int = 0) -> dict:
    plan = _plan()
    return registration(plan, plan.instances_of(name)[replica], "process")


def _checks(body: dict, **changed) -> dict:
    """The registration's check as Consul's agent/checks answers it (a TTL check shows no TTL)."""
    check = body["Check"]
    found = {"CheckID": check["CheckID"], "Name": check["Name"], "Notes": check["Notes"], "ServiceID": body["ID"],
             "ServiceName": body["Name"], "Type": "ttl", "Status": "passing", "Output": "", "Definition": {}}
    return {check["CheckID"]: found | changed}


def _as_consul(body: dict) -> dict:
    """A registration as Consul's agent/services answers it."""
    return {"ID": body["ID"], "Service": body["Name"], "Tags": list(body["Tags"]), "Address": body["Address"],
            "Port": body["Port"], "Meta": dict(body["Meta"]), "Weights": {"Passing": 1, "Warning": 1}}


# --- registrations -----------------------------------------------------------------------------


def test_a_registration_as_the_deploy_made_it_matches():
    expected = _expected()
    reg = Registration({expected["ID"]: _as_consul(expected)}, expected, _checks(expected))
    assert reg.matches
    assert reg.reason == f"web-local-0 registered as declared (spec-hash {expected['Meta']['spec-hash']})"


def test_a_missing_registration_is_named():
    reg = Registration({}, _expected(), {})
    assert not reg.matches
    assert reg.reason == "web-local-0 is not registered in Consul"


def test_a_changed_tag_is_the_only_difference_named():
    expected = _expected()
    found = _as_consul(expected) | {"Tags": ["canary"]}
    assert differences(found, _checks(expected), expected) == ["tags ['canary'], declared ['web']"]
    assert Registration({"web-local-0": found}, expected, _checks(expected)).reason == \
        "web-local-0 registered with tags ['canary'], declared ['web']"


def test_a_registration_moved_to_a_dead_port_says_where_and_that_nothing_listens():
    expected = _expected()
    dead = free_port()
    found = _as_consul(expected) | {"Port": dead}
    reg = Registration({"web-local-0": found}, expected, _checks(expected))
    assert not reg.matches and reg.address_moved and not reg.address_answers
    assert reg.reason == f"web-local-0 registered at 127.0.0.1:{dead} where nothing listens, declared 127.0.0.1:{expected['Port']}"


def test_meta_differences_include_the_spec_hash_and_undeclared_keys():
    expected = _expected()
    meta = dict(expected["Meta"], **{"spec-hash": "0000", "owner": "someone"})
    del meta["kind"]
    diffs = differences(_as_consul(expected) | {"Meta": meta}, _checks(expected), expected)
    assert diffs == [
        "meta kind missing, declared 'core'",
        "meta owner 'someone', declared not declared",
        f"meta spec-hash '0000', declared '{expected['Meta']['spec-hash']}'",
    ]


def test_a_check_swapped_behind_meshspecs_back_is_a_difference():
    expected = _expected()
    found, check_id = _as_consul(expected), expected["Check"]["CheckID"]
    assert differences(found, {}, expected) == [f"check {check_id} missing"]
    tcp = _checks(expected, Type="tcp", Notes="someone's TCP check")
    assert differences(found, tcp, expected) == [
        "check type 'tcp', declared 'ttl'", f"check notes \"someone's TCP check\", declared {expected['Check']['Notes']!r}"]
    other = _checks(expected, ServiceID="intruder")
    assert differences(found, other, expected) == ["check serviceid 'intruder', declared 'web-local-0'"]


def test_registrations_name_every_undeclared_one():
    services = {"web-local-0": {}, "intruder": {"Service": "intruder", "Address": "127.0.0.1", "Port": 9}}
    regs = Registrations(services, ["web-local-0", "web-local-1"])
    assert not regs.has_no_unexpected
    assert regs.reason == "unexpected registration not in the spec: intruder (service intruder at 127.0.0.1:9)"
    assert Registrations({"web-local-0": {}}, ["web-local-0"]).has_no_unexpected


# --- snapshots of supervisord and Consul checks -------------------------------------------------


def test_program_states_come_from_one_snapshot():
    sup = Supervisor("/x.sock", {"web-local-0": ("RUNNING", 12), "web-local-1": ("STOPPED", None)})
    assert Program(sup, "web-local-0").is_running
    assert not Program(sup, "web-local-1").is_running
    assert Program(sup, "web-local-1").reason == "program web-local-1 is STOPPED"
    assert Program(sup, "nope").reason == "program nope is not known to supervisord"


def test_an_unreachable_supervisord_is_the_reason():
    sup = Supervisor.read(f"/nonexistent/{os.getpid()}/supervisor.sock", timeout=0.5)
    assert sup.error and sup.error.startswith(f"supervisord at /nonexistent/{os.getpid()}/supervisor.sock does not answer")
    assert not Program(sup, "web-local-0").is_running
    assert Program(sup, "web-local-0").reason == sup.error


def test_a_consul_check_passes_only_when_passing():
    checks = {"service:a": {"Status": "passing"}, "service:b": {"Status": "critical", "Output": "HTTP 503\nbody"}}
    assert Check(checks, "service:a").is_passing
    assert Check(checks, "service:b").reason == "check service:b is critical: HTTP 503 body"
    assert Check(checks, "service:c").reason == "check service:c is not registered"


def test_port_predicate():
    port = free_port()
    assert not Port("127.0.0.1", port).is_listening
    assert Port("127.0.0.1", port).reason.startswith(f"nothing listens at 127.0.0.1:{port} (")


# --- routes ------------------------------------------------------------------------------------


def test_routes_go_through_svc_for_http_and_mcp_for_mcp():
    assert Route("http://127.0.0.1:1/", "web", "/index.html").url == "http://127.0.0.1:1/svc/web/index.html"
    assert Route("http://127.0.0.1:1", "files", mcp=True).url == "http://127.0.0.1:1/mcp/files"


@pytest.mark.parametrize(("service", "reason"), [
    ("consul", "routing disabled in the spec"),
    ("mesh-proxy", "the proxy itself"),
    ("redis", "routing mode tcp: reached directly, not through the proxy"),
    ("web", None),
])
def test_a_service_the_spec_does_not_route_has_no_route_to_check(service, reason):
    assert not_routed(_plan(), service) == reason


def test_nothing_is_routed_without_a_proxy_service():
    no_proxy = SPEC.replace("mesh: {name: t}", "mesh: {name: t}\nproxy: {service: null}")
    assert not_routed(_plan(no_proxy), "web") == "the spec declares no proxy service"


def _heard(check: str, service: str, status: str, server: str | None) -> CheckResult:
    subject = service if check == "routable" else f"{service}-local-0"
    return CheckResult(f"{subject}/{check}", subject, service, check, check, status, f"{server} answered",
                       "2026-01-02T03:04:05.123+00:00", 1.0, {"server": server})


def test_an_mcp_route_passes_when_the_proxy_reaches_the_server_the_instances_are():
    results = [_heard("healthy", "files", "passed", "secure-filesystem-server"),
               _heard("routable", "files", "passed", "secure-filesystem-server")]
    assert same_server(results) == results


def test_an_mcp_route_to_another_server_fails_naming_both():
    results = same_server([_heard("healthy", "github", "passed", "github-mcp-server"),
                           _heard("healthy", "files", "passed", "secure-filesystem-server"),
                           _heard("routable", "github", "passed", "secure-filesystem-server")])
    routed = results[-1]
    assert routed.status == "failed"
    assert routed.reason.endswith("answered by 'secure-filesystem-server', but github's instances answer as"
                                  " 'github-mcp-server'")
    assert [r.status for r in results[:2]] == ["passed", "passed"]


def test_an_mcp_route_cannot_pass_when_no_instance_answered_directly():
    results = same_server([_heard("healthy", "files", "failed", None),
                           _heard("routable", "files", "passed", "secure-filesystem-server")])
    assert results[-1].status == "failed"
    assert "no instance of files answered directly to compare with" in results[-1].reason


@pytest.mark.parametrize(("statuses", "verdict"), [
    (["passed", "passed"], "PASSING"),
    (["passed", "skipped"], "INCOMPLETE"),
    (["skipped"], "INCOMPLETE"),
    ([], "INCOMPLETE"),
    (["passed", "skipped", "failed"], "FAILING"),
])
def test_passing_only_when_every_check_ran_and_passed(statuses, verdict):
    assert verdict_of(statuses) == verdict


# --- output ------------------------------------------------------------------------------------


def _run() -> VerifyRun:
    def c(subject, service, check, status, reason, ms, **detail):
        return CheckResult(f"{subject}/{check}", subject, service, check, check, status, reason,
                           "2026-01-02T03:04:05.123+00:00", ms, detail)
    return VerifyRun(
        mesh="t", spec="spec.yaml", port_offset=7, state_dir="/s", consul="127.0.0.1:1",
        started_at="2026-01-02T03:04:05.100+00:00", finished_at="2026-01-02T03:04:05.412+00:00",
        duration_ms=312.5,
        checks=[
            c("web-local-0", "web", "running", "passed", "program web-local-0 is RUNNING (pid 4)", 11.25),
            c("files-local-0", "files", "healthy", "failed", "127.0.0.1:5 answers HTTP 404 but not MCP initialize",
              23.5, probe="mcp", tool_count=None),
            c("files-local-0", "files", "running", "failed", "program files-local-0 is STOPPED", 3.75),
            c("files", "files", "routable", "skipped", "the spec declares no proxy service", 0.0),
            c("mesh", None, "counts", "failed", "2 planned, 1 running, 2 registered, 2 passing", 1.5,
              planned=2, running=1, registered=2, passing=2, on_this_host=2),
        ],
        sources={"supervisord": {"duration_ms": 4.5, "error": None}},
    )


def test_json_round_trips_and_carries_a_summary():
    run = _run()
    data = json.loads(to_json(run))
    assert data["ok"] is False
    assert data["summary"] == {"checks": 5, "passed": 1, "failed": 3, "skipped": 1}
    assert VerifyRun.from_dict(data) == run


def test_a_failure_is_one_line_naming_its_service():
    assert [f.line for f in _run().failures] == [
        "files: 127.0.0.1:5 answers HTTP 404 but not MCP initialize",
        "files: program files-local-0 is STOPPED",
        "mesh: 2 planned, 1 running, 2 registered, 2 passing",
    ]


def test_junit_has_one_testcase_per_check_and_the_reason_as_failure_message():
    suites = ET.fromstring(to_junit(_run()))
    suite = suites.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "3", "1")
    assert suite.get("timestamp") == "2026-01-02T03:04:05.100+00:00"
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name"), c.get("time")) for c in cases] == [
        ("web-local-0", "running", "0.011"), ("files-local-0", "healthy", "0.024"),
        ("files-local-0", "running", "0.004"), ("files", "routable", "0.000"), ("mesh", "counts", "0.002"),
    ]
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    assert cases[1].find("failure").get("message") == "127.0.0.1:5 answers HTTP 404 but not MCP initialize"
    assert cases[3].find("skipped").get("message") == "the spec declares no proxy service"


def test_the_report_takes_its_numbers_and_times_from_the_checks(tmp_path):
    data = json.loads(to_json(_run()))
    md_path, html_path = write_reports(data, tmp_path, source_name="verify.json")
    md, page = md_path.read_text(), html_path.read_text()
    assert md.startswith("# Mesh t: FAILING")
    assert "from 2026-01-02T03:04:05.100+00:00 to 2026-01-02T03:04:05.412+00:00 (312.5 ms)" in md
    assert "| instances planned | 2 | mesh/counts | 2026-01-02T03:04:05.123+00:00 |" in md
    assert "| programs running | 1 | mesh/counts |" in md
    assert "| checks failed | 3 | all checks |" in md
    assert "| files-local-0/healthy | FAIL | 2026-01-02T03:04:05.123+00:00 | 23.5 | 127.0.0.1:5 answers HTTP 404 but not MCP initialize |" in md
    assert "| web-local-0 | web | ok (11.2 ms) | - | - | - | - | - |" in md
    # The HTML says the same: the same cells.
    assert '<td>programs running</td><td>1</td>' in page
    assert '<td class="FAIL">FAIL</td><td>2026-01-02T03:04:05.123+00:00</td><td>23.5</td>' in page
    assert to_markdown(sections(data)) != to_html(sections(data))


def test_tap_has_a_test_point_per_check_and_skips_apart():
    lines = to_tap(_run()).splitlines()
    assert lines[:2] == ["TAP version 14", "1..5"]
    assert lines[2] == "ok 1 - web-local-0/running: program web-local-0 is RUNNING (pid 4)"
    assert lines[3] == "not ok 2 - files-local-0/healthy: 127.0.0.1:5 answers HTTP 404 but not MCP initialize"
    assert lines[5] == "ok 4 - files/routable # SKIP the spec declares no proxy service"


def test_a_run_with_a_check_not_run_is_incomplete_and_names_it(tmp_path):
    run = _run()
    data = json.loads(to_json(VerifyRun(**{**run.__dict__, "checks": [c for c in run.checks if c.status != "failed"]})))
    assert (data["ok"], data["verdict"]) == (False, "INCOMPLETE")
    md = write_reports(data, tmp_path)[0].read_text()
    assert md.startswith("# Mesh t: INCOMPLETE")
    assert "| files/routable | 2026-01-02T03:04:05.123+00:00 | the spec declares no proxy service |" in md


def test_a_bad_spec_exits_2_with_the_validate_messages(tmp_path):
    bad = REPO / "tests" / "data" / "bad_specs" / "09_unknown_key_in_service.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "CONSUL_HTTP"))}
    env |= {"MESH_SPEC": str(bad), "MESH_STATE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "meshspec.verify.cli", "verify"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith(f"{bad}:") and lines[-1].endswith("problem(s); nothing was verified")


# --- processes in containers, read from the kernel (verify --gone when the engine does not answer) ---

CONTAINER_ID = "3f" * 32


@pytest.mark.parametrize("cgroup, expected", [
    (f"12:pids:/docker/{CONTAINER_ID}\n0::/docker/{CONTAINER_ID}\n", CONTAINER_ID),  # cgroupfs driver
    (f"0::/system.slice/docker-{CONTAINER_ID}.scope\n", CONTAINER_ID),  # systemd driver
    ("4:memory:/process_api/522f08ef27b6f1e099ade020eed8a6e4\n0::/\n", None),  # this host's own processes
    ("0::/system.slice/docker.service\n", None),  # dockerd itself is not in a container
])
def test_a_process_in_a_docker_container_is_told_by_its_cgroup(cgroup, expected):
    assert in_container(cgroup) == expected


def test_processes_in_containers_reads_every_process(tmp_path):
    for pid, cgroup in {"7": f"0::/docker/{CONTAINER_ID}\n", "8": "0::/\n", "self": f"0::/docker/{CONTAINER_ID}\n"}.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cgroup").write_text(cgroup)
    assert processes_in_containers(tmp_path) == {7: CONTAINER_ID}


def test_another_host_s_port_is_free_only_by_a_connect_that_ran_there():
    plan = make_plan(parse_spec(SPEC), [Host("h1", "10.213.0.2")], port_offset=0, meshspec_bin="/m/bin/meshspec")
    inst = plan.instances_of("web")[0]

    def on_h1(result: Result) -> Future:
        done = Future()
        done.set_result({inst.id: result})
        return done

    refused = Result(False, f"nothing listens at {inst.address}:{inst.port} (connection refused)", {"listening": False})
    assert port_free(inst, 1, on_h1(refused)) == outcome(True, f"{refused.output}, on h1", port=inst.port)
    held = Result(True, f"{inst.address}:{inst.port} accepts connections", {"listening": True})
    assert port_free(inst, 1, on_h1(held)) == outcome(False, f"{held.output}, on h1", port=inst.port)
    unrun = Result(False, "h1: /m/bin/meshspec probe run: ssh exited 255: Connection refused")
    assert port_free(inst, 1, on_h1(unrun)) == outcome(False, unrun.output, port=inst.port)
