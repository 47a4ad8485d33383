"""The programs' Consul tokens as render.acl plans them, read back with the agent's own rule parser,
and the secret files a host keeps (render.secrets)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from meshspec.plan import make_plan
from meshspec.plan.hosts import Host
from meshspec.plan.layout import STATS_CREDENTIALS, STATS_USERS
from meshspec.render.acl import description_prefix, host_tokens, mesh_tokens, service_rules
from meshspec.render.containers import container_user
from meshspec.render.preparation import preparation
from meshspec.render.secrets import host_secret_files
from meshspec.runtime.agent.acl import parse_rules
from meshspec.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
LOCAL = [Host("@local", "127.0.0.1")]


def shipped():
    return make_plan(load_spec(str(ROOT / "mesh_spec.yaml")), LOCAL)


def level(rules: dict, resource: str, name: str) -> str | None:
    """As the agent reads the rules py-consul sends: JSON, parsed as HCL."""
    return parse_rules(json.dumps(rules)).level(resource, name)


def test_a_service_writes_itself_and_reads_only_what_it_depends_on():
    plan = shipped()
    rules = service_rules(plan, "frontend")  # depends_on: [backend-api]
    assert level(rules, "service", "frontend") == "write"
    assert level(rules, "service", "backend-api") == "read"
    assert level(rules, "service", "postgresql") is None and level(rules, "service", "consul") is None
    assert level(rules, "node", "any-node") == "read"  # Consul filters health and catalog by node too


def test_a_service_that_lists_the_registry_reads_every_service_and_writes_only_itself():
    rules = service_rules(shipped(), "backend-api")  # registry: {read: all}
    assert level(rules, "service", "backend-api") == "write"
    assert level(rules, "service", "postgresql") == "read" and level(rules, "service", "not-declared") == "read"
    assert level(rules, "service", "frontend") == "read"  # read, never write: it cannot deregister another
    assert level(rules, "key", "anything") is None and level(rules, "acl", "") is None


def test_only_a_monitor_that_says_so_reads_the_agents_metrics():
    plan = shipped()
    assert level(service_rules(plan, "prometheus"), "agent", "any-node") == "read"  # registry: {agent: read}
    assert level(service_rules(plan, "backend-api"), "agent", "any-node") is None


def test_the_checker_writes_the_checks_of_its_host_s_services_and_nothing_else():
    plan = shipped()
    checker, *services = host_tokens(plan, "local", plan.instances)
    assert checker.path == str(plan.layout.checker_token_file)
    assert {level(checker.rules, "service", s.name) for s in plan.spec.services} == {"write"}
    assert level(checker.rules, "service", "not-declared") is None and level(checker.rules, "key", "x") is None
    assert [t.path for t in services] == [str(plan.layout.service_token_file(s)) for s in sorted(s.name for s in plan.spec.services)]


def test_policy_names_are_consul_s_and_descriptions_tell_meshes_apart():
    """Pruning goes by description: the tokens of mesh `a` are not those of mesh `a-b`."""
    tokens = mesh_tokens(shipped())
    assert len(tokens) == 41 + 1 and len({t.name for t in tokens}) == 42
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,128}", t.name) for t in tokens)
    spec = "version: 1\nmesh: {name: %s}\nproxy: {service: null}\nservices:\n" \
           "  - {name: consul, kind: core, description: r, port: 8500, process: {command: [agent]}, health: {tcp: {}}}\n"
    a, ab = (make_plan(parse_spec(spec % name), LOCAL) for name in ("a", "a-b"))
    assert not description_prefix(ab).startswith(description_prefix(a))
    assert all(t.description.startswith(description_prefix(a)) for t in mesh_tokens(a))


def test_every_host_keeps_its_own_checker_token_and_the_registry_holds_them_all():
    hosts = [Host("@local", "127.0.0.1"), Host("web2", "127.0.0.2")]
    spec = parse_spec("version: 1\nmesh: {name: m}\nproxy: {service: null}\nservices:\n"
                      "  - {name: consul, kind: core, description: r, port: 8500, process: {command: [agent]}, health: {tcp: {}}}\n")
    plan = make_plan(spec, hosts)
    names = [t.name for t in mesh_tokens(plan)]
    assert len([n for n in names if "checker" in n]) == len({i.host.label for i in plan.instances})


# --- the host's secret files (render.secrets) -----------------------------------------------------


def test_the_proxy_s_host_keeps_the_stats_page_s_userlist_and_credentials_beside_the_tokens():
    plan = shipped()
    files = {f.path: f for f in host_secret_files(plan, "local", plan.instances)}
    users, credentials = files[plan.proxy_file(STATS_USERS)], files[plan.proxy_file(STATS_CREDENTIALS)]
    assert users.name == credentials.name  # one secret, in HAProxy's form and in curl -u's
    assert users.name not in {t.name for t in mesh_tokens(plan)}  # and no token's
    assert credentials.text("s3cret") == "meshspec:s3cret\n"
    assert "userlist meshspec-stats\n    user meshspec insecure-password s3cret\n" in users.text("s3cret")
    assert {str(plan.layout.service_token_file(s.name)) for s in plan.spec.services} <= set(files)
    # directories only root lists
    assert all(Path(path).parent.name in ("tokens", "stats", "edge") or Path(path).parent.parent.name == "secrets"
               for path in files)


def test_a_host_without_the_proxy_keeps_no_stats_credentials():
    plan = shipped()
    others = [i for i in plan.instances if i.service != plan.spec.proxy.service]
    paths = {f.path for f in host_secret_files(plan, "local", others)}
    assert plan.proxy_file(STATS_USERS) not in paths and plan.proxy_file(STATS_CREDENTIALS) not in paths


def test_a_token_file_is_its_reader_s_only_where_the_program_reads_it_and_runs_as_a_user():
    plan = shipped()
    owners = {f.path: f.owner for f in host_secret_files(plan, "local", plan.instances)}
    token = plan.layout.service_token_file
    assert owners[str(token("backend-api"))] == "meshspec-api"  # MESH_CONSUL_TOKEN_FILE in its environment
    assert owners[str(token("mcp-gateway"))] == "meshspec-gateway"  # --token-file in its command
    assert owners[str(token("mesh-controller"))] == "meshspec-proxy"
    assert owners[str(token("mesh-proxy"))] is None  # HAProxy runs as root and never reads it
    assert owners[str(token("frontend"))] is None  # runs as meshspec-app, never reads its token
    assert owners[str(plan.layout.checker_token_file)] is None
    assert owners[plan.proxy_file(STATS_CREDENTIALS)] is None
    tokens = str(token("x").parent)
    readers = [o for path, o in owners.items() if o and path.startswith(tokens)]
    assert len(readers) == len(set(readers))  # no two programs' users read one token


def test_in_the_docker_runtime_every_secret_file_is_root_s():
    plan = shipped()
    assert not any(f.owner for f in host_secret_files(plan, "local", plan.instances, owned=False))


def test_a_program_that_reads_a_secret_file_runs_as_root_in_its_container_and_others_as_their_users():
    plan = shipped()
    assert container_user(plan, "backend-api") is None  # its token file is the host's root's there
    assert container_user(plan, "consul") is None  # the management token
    assert container_user(plan, "frontend") == "meshspec-app"
    assert container_user(plan, "claude-task-runner") == "meshspec-tasks"


def test_the_controller_s_user_gets_haproxy_s_sockets_the_userlist_and_the_files_a_reload_writes():
    """What a controller running without root needs, each made its user's: HAProxy hands it both
    sockets (haproxy.cfg's `stats socket ... user`, `-S ...,user,`), the deploy its state files
    (the proxy's preparation) and the stats userlist it validates before a reload."""
    plan = shipped()
    assert plan.proxy_controller_user == "meshspec-proxy"
    assert plan.proxy_master_bind(plan.instances_of("mesh-proxy")[0]).endswith("/master.sock,mode,600,user,meshspec-proxy")
    proxy = plan.instances_of("mesh-proxy")[0]
    script = preparation(plan, proxy).script()
    assert "chown meshspec-proxy" in script and "/server-state" in script and "/loaded-shape" in script
    assert "chown" not in preparation(plan, plan.instances_of("redis")[0]).script().replace("chown -R redis", "")
    owners = {f.path: f.owner for f in host_secret_files(plan, "local", plan.instances)}
    assert owners[plan.proxy_file(STATS_USERS)] == "meshspec-proxy" and owners[plan.proxy_file(STATS_CREDENTIALS)] is None
