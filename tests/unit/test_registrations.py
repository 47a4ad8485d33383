from meshspec.plan import Runtime, make_plan
from meshspec.plan.hosts import Host
from meshspec.render.probes import COMMAND, HTTP, MCP, TCP, probe
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
    health: {command: [redis-cli, -p, "{port}", ping], interval: 20s}
    routing: {mode: tcp, retries: {retry_on: [conn-failure]}}
"""


def plan(offset=0):
    return make_plan(parse_spec(SPEC), [Host("@local", "127.0.0.1")], port_offset=offset, meshspec_bin="/m/bin/meshspec")


def reg(name, offset=0):
    p = plan(offset)
    return registration(p, p.instances_of(name)[0], "process")


def test_http_check_targets_the_instance_with_mesh_default_timing():
    check = reg("consul")["Check"]
    assert check["HTTP"] == "http://127.0.0.1:8500/v1/status/leader"
    assert (check["Interval"], check["Timeout"]) == ("3s", "1s")
    assert check["CheckID"] == "service:consul-local-0"


def test_mcp_check_is_a_protocol_handshake_not_a_port_probe():
    r = reg("files")
    assert r["Check"]["Args"] == ["/m/bin/meshspec-probe", "mcp", "http://127.0.0.1:7003/mcp", "--min-tools", "2"]
    assert r["Check"]["DeregisterCriticalServiceAfter"] == "5m"
    assert r["Meta"]["team"] == "tools" and r["Meta"]["kind"] == "mcp" and r["Tags"] == ["mcp"]


def test_command_checks_render_placeholders_and_override_interval():
    check = reg("redis", offset=100)["Check"]
    assert check["Args"] == ["redis-cli", "-p", "6479", "ping"]
    assert check["Interval"] == "20s"


def test_spec_hash_is_stable_and_follows_every_registered_field():
    assert reg("files")["Meta"]["spec-hash"] == reg("files")["Meta"]["spec-hash"]
    assert reg("files")["Meta"]["spec-hash"] != reg("files", offset=1)["Meta"]["spec-hash"]


def test_only_this_meshs_registrations_are_ours():
    r = reg("files")
    assert is_ours(r, "t")
    assert not is_ours(r, "another-mesh")
    assert not is_ours({"Meta": {"mesh": "t"}}, "t")


def test_the_consul_check_is_built_from_the_one_probe_definition():
    """verify's `healthy` runs render.probes.probe too: the check names exactly what the probe targets."""
    p = plan()
    for inst in p.instances:
        found, check = probe(p, inst), registration(p, inst, Runtime.PROCESS)["Check"]
        target = {HTTP: lambda: check["HTTP"], MCP: lambda: check["Args"][2], TCP: lambda: check["TCP"],
                  COMMAND: lambda: tuple(check["Args"])}[found.kind]()
        expected = {HTTP: found.url, MCP: found.url, TCP: f"{found.address}:{found.port}", COMMAND: found.argv}
        assert target == expected[found.kind], inst.id
    assert {probe(p, i).kind for i in p.instances} == {HTTP, MCP, TCP, COMMAND}
