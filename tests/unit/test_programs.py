"""Rendered supervisord configuration, read back by supervisord's own config parser."""

import shlex

import pytest
from supervisor.options import ServerOptions

from meshspec.plan import make_plan
from meshspec.plan.hosts import Host
from meshspec.render.programs import launch, program, revision, supervisord_conf
from meshspec.spec import parse_spec

SPEC = """
version: 1
mesh: {name: t}
services:
  - {name: consul, kind: core, description: r, port: 8500, process: {command: [agent]}, health: {tcp: {}}, routing: {enabled: false}}
  - name: mesh-proxy
    kind: core
    description: p
    port: 8000
    ports: {stats: 8001}
    process: {command: [haproxy, -f, "{state_dir}/haproxy.cfg"], stop_signal: USR1, stop_timeout: 3s}
    health: {tcp: {}}
    routing: {enabled: false}
  - name: api
    kind: core
    description: api
    port: 9000
    process:
      command: [python3, -c, "print('100% done, it said \\"hi\\"')", "{port}"]
      env: {GREETING: "it's \\"quoted\\", with, commas", RATE: "50%"}
      user: nobody
    health: {tcp: {}}
"""


@pytest.fixture
def loaded(tmp_path):
    plan = make_plan(parse_spec(SPEC), [Host("@local", "127.0.0.1")], state_dir=str(tmp_path))
    (tmp_path / "supervisor" / "programs").mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    (tmp_path / "supervisor" / "supervisord.conf").write_text(supervisord_conf(plan.layout))
    for inst in plan.instances:
        p = program(plan, inst)
        (tmp_path / "supervisor" / "programs" / f"{inst.id}.conf").write_text(p.text)
    options = ServerOptions()
    options.realize(args=["-c", str(tmp_path / "supervisor" / "supervisord.conf")])
    return plan, {g.name: g.process_configs[0] for g in options.process_group_configs}


def test_every_instance_is_one_program(loaded):
    plan, programs = loaded
    assert sorted(programs) == sorted(i.id for i in plan.instances)


def test_command_and_env_survive_quotes_commas_and_percent_signs(loaded, tmp_path):
    _, programs = loaded
    argv = shlex.split(programs["api-local-0"].command)
    home = f"HOME={tmp_path}/instances/api-local-0"  # it runs as its own user: HOME is its directory
    assert argv == ["/usr/bin/env", "GREETING=it's \"quoted\", with, commas", home, "RATE=50%",
                    "python3", "-c", "print('100% done, it said \"hi\"')", "9000"]


def test_a_program_of_root_keeps_its_home_and_the_spec_s_home_wins():
    plan = make_plan(parse_spec(SPEC), [Host("@local", "127.0.0.1")])
    assert "HOME" not in launch(plan, plan.instances_of("mesh-proxy")[0]).env  # no user: supervisord's own
    named = make_plan(parse_spec(SPEC.replace('RATE: "50%"}', 'RATE: "50%", HOME: /srv/h}')), [Host("@local", "127.0.0.1")])
    assert launch(named, named.instances_of("api")[0]).env["HOME"] == "/srv/h"


def test_stop_settings_and_user_come_from_the_spec(loaded, tmp_path):
    _, programs = loaded
    proxy, api = programs["mesh-proxy-local-0"], programs["api-local-0"]
    assert (proxy.stopsignal.name if hasattr(proxy.stopsignal, "name") else proxy.stopsignal) in (10, "SIGUSR1")
    assert proxy.stopwaitsecs == 3
    assert proxy.directory == str(tmp_path / "instances" / "mesh-proxy-local-0")
    assert api.uid is not None  # user=nobody resolved by supervisord
    assert proxy.killasgroup and proxy.stopasgroup


def test_a_changed_rendered_file_changes_what_supervisord_parses(tmp_path):
    """supervisord's `update` ignores comments: the revision must be a parsed setting."""
    from meshspec.render.programs import revision

    spec = parse_spec(SPEC.replace("process: {command: [haproxy, -f", "process: {files: {'{state_dir}/rules.yml': prometheus-rules}, command: [haproxy, -f"))
    plan = make_plan(spec, [Host("@local", "127.0.0.1")], state_dir=str(tmp_path))
    proxy = plan.instances_of("mesh-proxy")[0]
    other = make_plan(parse_spec(SPEC.replace("name: t", "name: u").replace("process: {command: [haproxy, -f", "process: {files: {'{state_dir}/rules.yml': prometheus-rules}, command: [haproxy, -f")),
                      [Host("@local", "127.0.0.1")], state_dir=str(tmp_path))
    assert revision(plan, proxy) != revision(other, other.instances_of("mesh-proxy")[0])  # the rules name the mesh


def test_the_revision_reaches_supervisords_parsed_environment(loaded):
    _, programs = loaded
    assert programs["api-local-0"].environment["MESHSPEC_REVISION"].startswith("0.")


def test_a_programs_install_dir_is_its_recipes_directory_in_the_install_cache(tmp_path):
    """{install_dir} points into the host's install cache, not the state dir: meshes share installs."""
    from meshspec.plan.layout import install_key

    spec = parse_spec(SPEC.replace("      user: nobody\n", "      user: nobody\n      install: {pip: [mcp-proxy==0.13.0]}\n")
                      .replace("command: [python3, -c", 'command: ["{install_dir}/venv/bin/python", -c'))
    plan = make_plan(spec, [Host("@local", "127.0.0.1")], state_dir=str(tmp_path), cache_dir="/var/cache/meshspec")
    text = program(plan, plan.instances_of("api")[0]).text
    assert f"/var/cache/meshspec/api-{install_key(plan.service('api').process.install)}/venv/bin/python" in text
    assert f"{tmp_path}/install" not in text


def test_a_program_meshspec_starts_restarts_with_a_new_meshspec_build():
    """A `git pull` of meshspec restarts the programs that run it (its own services), not the others."""
    spec = parse_spec(SPEC.replace("command: [agent]", 'command: ["{meshspec}", agent]'))
    old, new = (make_plan(spec, [Host("@local", "127.0.0.1")], meshspec_build=build) for build in ("b1", "b2"))
    assert revision(old, old.instances_of("consul")[0]) != revision(new, new.instances_of("consul")[0])
    assert revision(old, old.instances_of("api")[0]) == revision(new, new.instances_of("api")[0])


def test_meshspec_s_own_services_get_opentelemetry_s_variables_where_the_spec_names_a_trace_store():
    own = SPEC.replace("mesh: {name: t}", "mesh: {name: t}\ntracing: {store: consul, sampling: 0.25}") + """
  - {name: web, kind: core, description: w, port: 9100, process: {command: ["{meshspec}", serve, frontend]},
     health: {tcp: {}}}
"""
    plan = make_plan(parse_spec(own), [Host("@local", "127.0.0.1")])
    env = launch(plan, plan.instances_of("web")[0]).env
    assert {k: v for k, v in env.items() if k.startswith("OTEL_")} == {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:8500/v1/traces",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_SERVICE_NAME": "web", "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=web-local-0,meshspec.mesh=t"}
    assert not any(k.startswith("OTEL_") for k in launch(plan, plan.instances_of("api")[0]).env)  # not meshspec's
    untraced = make_plan(parse_spec(own.replace("tracing: {store: consul, sampling: 0.25}\n", "")),
                         [Host("@local", "127.0.0.1")])
    assert not any(k.startswith("OTEL_") for k in launch(untraced, untraced.instances_of("web")[0]).env)
