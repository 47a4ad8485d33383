import pytest

from meshspec.spec import SpecInvalid, parse_spec
from meshspec.spec.resolve import effective_routing

HEAD = """version: 1
mesh: {name: t}
defaults:
  routing: {timeouts: {connect: 1s}, lb: {policy: least_conn}}
services:
  - name: consul
    kind: core
    description: registry
    port: 8500
    process: {command: [agent]}
    health: {http: {path: /}}
    routing: {enabled: false}
  - name: mesh-proxy
    kind: core
    description: proxy
    port: 8000
    ports: {stats: 8001}
    process: {command: [haproxy]}
    health: {http: {path: /healthz}}
    routing: {enabled: false}
"""


def problems(text: str) -> list[tuple[int, int, str, str]]:
    with pytest.raises(SpecInvalid) as err:
        parse_spec(text, "t.yaml")
    return [(p.line, p.col, p.key, p.message) for p in err.value.problems]


def test_every_problem_is_reported_in_one_run_schema_and_rules_together():
    found = problems(HEAD + """  - name: a
    kind: core
    description: a
    port: "9000"
    process: {command: [a]}
    health: {tcp: {}}
  - name: b
    kind: core
    description: b
    port: 8000
    depends_on: [nope]
    process: {command: [b]}
    health: {tcp: {}}
""")
    assert [(line, col, key) for line, col, key, _ in found] == [
        (24, 11, "services.a.port"),
        (30, 11, "services.b.port"),
        (31, 18, "services.b.depends_on.0"),
    ]
    assert "taken by mesh-proxy" in found[1][3]
    assert "unknown service 'nope'" in found[2][3]


def test_unknown_keys_suggest_the_close_valid_one():
    [(line, col, key, msg)] = problems(HEAD.replace("    routing: {enabled: false}\n", "    routnig: {enabled: false}\n", 1))
    assert (line, col, key) == (12, 5, "services.consul.routnig")
    assert msg.startswith("unknown key; did you mean 'routing'?")


def test_yaml_boolean_keys_are_caught_once_with_advice():
    [(line, col, key, msg)] = problems(HEAD.replace("ports: {stats: 8001}", "ports: {stats: 8001, on: 8002}"))
    assert (line, col) == (17, 26)
    assert "not read as text by YAML; quote it" in msg


def test_syntax_errors_are_located():
    [(line, col, key, msg)] = problems("version: 1\nmesh: {name: t\nservices: []\n")
    assert line == 3 and key == "(file)" and msg.startswith("YAML syntax:")


def test_service_routing_overlays_mesh_defaults_field_by_field():
    spec = parse_spec(HEAD + """  - name: api
    kind: core
    description: api
    port: 9000
    process: {command: [api]}
    health: {http: {path: /health}}
    routing: {timeouts: {request: 5s}}
""")
    r = effective_routing(spec, spec.services[2])
    assert (r.timeouts.connect, r.timeouts.request, r.lb.policy) == (1000, 5000, "least_conn")
