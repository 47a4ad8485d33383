import dataclasses
import json

from meshspec.plan import Runtime, make_plan
from meshspec.plan.hosts import Host
from meshspec.render.checker import checker_program, checks_file
from meshspec.render.probes import HTTP, MCP, POSTGRES, REDIS, TCP, probe
from meshspec.render.registrations import is_ours, registration
from meshspec.spec import parse_spec

SPEC = """
version: 1
mesh: {name: t}
defaults: {health: {interval: 3s, timeout: 1s}}
services:
  - {name: consul, kind: core, description: r, port: 8500, process: {command: [agent]}, health: {http: {path: /v1/status/leader}}, routing: {enabled: false}}
  - {name: mesh-proxy, kind: core, description: p, port: 8000, ports: {stats: 8001}, process: {command: [haproxy]}, health: {tcp: {}}, routing: {enabled: false}}
  - name: files
    kind: mcp
    description: f
    port: 7003
    tags: [mcp]
    meta: {team: tools}
    process: {command: [x]}
    health: {mcp: {min_tools: 2}, deregister_critical_after: 5m}
  - name: redis
    kind: database
    description: kv
    port: 6379
    process: {command: [redis-server]}
    health: {redis: {}, interval: 20s}
    routing: {mode: tcp, retries: {retry_on: [conn-failure]}}
  - name: postgres
    kind: database
    description: sql
    port: 5432
    process: {command: [postgres]}
    health: {postgres: {}, success_before_passing: 2, failures_before_critical: 3}
    routing: {mode: tcp, retries: {retry_on: [conn-failure]}}
"""


def plan(offset=0):
    return make_plan(parse_spec(SPEC), [Host("@local", "127.0.0.1")], port_offset=offset, meshspec_bin="/m/bin/meshspec")


def reg(name, offset=0):
    p = plan(offset)
    return registration(p, p.instances_of(name)[0], "process")


def test_the_check_is_a_ttl_check_the_host_checker_renews():
    check = reg("consul")["Check"]
    # TTL = two missed reports + one probe timeout, at the mesh's default timing (3s, 1s)
    assert (check["CheckID"], check["TTL"]) == ("service:consul-local-0", "7s")
    assert "Interval" not in check and "HTTP" not in check  # Consul does not run it: the checker does
    assert check["Notes"] == "mesh-checker probes http http://127.0.0.1:8500/v1/status/leader every 3s (timeout 1s)"


def test_mcp_check_is_a_protocol_handshake_not_a_port_probe():
    r = reg("files")
    assert r["Check"]["Name"] == "files mcp" and "http://127.0.0.1:7003/mcp" in r["Check"]["Notes"]
    assert r["Check"]["DeregisterCriticalServiceAfter"] == "5m"
    assert r["Meta"]["team"] == "tools" and r["Meta"]["kind"] == "mcp" and r["Tags"] == ["mcp"]


def test_a_service_interval_overrides_the_default_and_sets_the_ttl():
    check = reg("redis", offset=100)["Check"]
    assert check["TTL"] == "41s" and "every 20s" in check["Notes"]


def test_damping_is_registered_as_declared():
    check = reg("postgres")["Check"]
    assert (check["SuccessBeforePassing"], check["FailuresBeforeCritical"]) == (2, 3)


def test_spec_hash_is_stable_and_follows_every_registered_field():
    assert reg("files")["Meta"]["spec-hash"] == reg("files")["Meta"]["spec-hash"]
    assert reg("files")["Meta"]["spec-hash"] != reg("files", offset=1)["Meta"]["spec-hash"]


def test_only_this_meshs_registrations_are_ours():
    r = reg("files")
    assert is_ours(r, "t")
    assert not is_ours(r, "another-mesh")
    assert not is_ours({"Meta": {"mesh": "t"}}, "t")


def test_the_checker_runs_exactly_the_probe_the_registration_names():
    """verify's `healthy` runs render.probes.probe too: the checker's checks file carries that same
    probe, for the check ID the registration holds."""
    p = plan()
    checks = {c["check_id"]: c for c in json.loads(checks_file(p, p.instances, Runtime.PROCESS))["checks"]}
    for inst in p.instances:
        found, check = probe(p, inst), registration(p, inst, Runtime.PROCESS)["Check"]
        assert checks[check["CheckID"]]["probe"] == json.loads(json.dumps(dataclasses.asdict(found))), inst.id
        assert found.target in check["Notes"], inst.id
    assert {probe(p, i).kind for i in p.instances} == {HTTP, MCP, TCP, REDIS, POSTGRES}


def test_the_checker_program_restarts_when_its_checks_change():
    p = plan()
    first = checker_program(p, p.instances, Runtime.PROCESS, "/m/bin")
    assert first.name == "mesh-checker" and "command=/m/bin/meshspec-checker --checks" in first.text
    fewer = checker_program(p, p.instances[:-1], Runtime.PROCESS, "/m/bin")
    assert first.text != fewer.text  # the revision in environment= differs: supervisord restarts it


def test_a_probe_that_needs_the_consul_token_names_its_file_not_the_token():
    """The token is read as the probe runs: the checks file and the registration name the service's
    own token file, and carry no header with a token."""
    p = make_plan(parse_spec(SPEC.replace("{http: {path: /v1/status/leader}}",
                                          '{http: {path: "/v1/catalog/service/{name}", consul_token: true}}')),
                  [Host("@local", "127.0.0.1")])
    consul = p.instances_of("consul")[0]
    assert probe(p, consul).token_file == str(p.layout.service_token_file("consul"))
    assert probe(p, consul).url.endswith("/v1/catalog/service/consul")
    assert "X-Consul-Token" not in checks_file(p, p.instances, Runtime.PROCESS)
    assert probe(p, p.instances_of("files")[0]).token_file is None
