from pathlib import Path

import pytest

from meshspec.plan import make_plan
from meshspec.plan.hosts import Host
from meshspec.spec import SpecInvalid, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
LOCAL = Host("@local", "127.0.0.1")

SMALL = """
version: 1
mesh: {name: t, replica_port_step: 100}
services:
  - name: consul
    kind: core
    description: registry
    port: 8500
    process: {command: ["{meshspec}", agent, --port, "{port}"]}
    health: {http: {path: /v1/status/leader}}
    routing: {enabled: false}
  - name: mesh-proxy
    kind: core
    description: proxy
    port: 8000
    ports: {stats: 8001}
    process: {command: [haproxy]}
    health: {http: {path: /healthz}}
    routing: {enabled: false}
  - name: redis
    kind: database
    description: kv
    port: 6379
    process: {command: [redis-server, --port, "{port}", --dir, "{state_dir}"]}
    health: {command: [redis-cli, -p, "{port}", ping]}
    routing: {mode: tcp, retries: {retry_on: [conn-failure]}}
  - name: api
    kind: core
    description: api
    port: 9000
    replicas: 3
    depends_on: [redis]
    process:
      command: [api, --listen, "{address}:{port}", --redis, "{services.redis.address}:{services.redis.port}"]
      env: {CONSUL: "{consul.addr}", PROXY: "{proxy.url}", STATS: "{services.redis.url}"}
    health: {http: {path: /health}}
"""


@pytest.fixture
def spec():
    return parse_spec(SMALL)


def test_replicas_get_stable_ids_and_stepped_ports(spec):
    plan = make_plan(spec, [LOCAL])
    assert [(i.id, i.port) for i in plan.instances_of("api")] == [
        ("api-local-0", 9000), ("api-local-1", 9100), ("api-local-2", 9200)]


def test_port_offset_moves_every_port_including_named_ones(spec):
    plan = make_plan(spec, [LOCAL], port_offset=20000)
    proxy = plan.instances_of("mesh-proxy")[0]
    assert (proxy.port, proxy.ports) == (28000, {"stats": 28001})


def test_replicas_spread_round_robin_over_hosts(spec):
    hosts = [LOCAL, Host("web2", "10.1.1.2")]
    plan = make_plan(spec, hosts)
    assert [(i.id, i.address) for i in plan.instances_of("api")] == [
        ("api-local-0", "127.0.0.1"), ("api-web2-1", "10.1.1.2"), ("api-local-2", "127.0.0.1")]
    assert {h.name: len(plan.instances_on(h.name)) for h in hosts} == {"@local": 5, "web2": 1}


THREE = [Host("a", "10.1.1.1", groups=("web",)), Host("b", "10.1.1.2", groups=("web", "db")),
         Host("c", "10.1.1.3", groups=("db",))]


def placed_spec(placement: str) -> str:
    return SMALL.replace("    replicas: 3\n", f"    replicas: 3\n    placement: {placement}\n")


@pytest.mark.parametrize("placement, hosts", [
    ("{}", ["a", "b", "c"]),  # every host, in the inventory's order
    ("{hosts: [db]}", ["b", "c", "b"]),  # a group
    ("{hosts: [c, a]}", ["a", "c", "a"]),  # hosts by name, in the inventory's order
    ("{hosts: [web], spread: false}", ["a", "a", "a"]),  # all on the first
])
def test_a_placement_picks_the_hosts_replicas_spread_over(placement, hosts):
    names = frozenset({"a", "b", "c", "web", "db"})
    plan = make_plan(parse_spec(placed_spec(placement), inventory=names), THREE)
    assert [i.host.name for i in plan.instances_of("api")] == hosts
    assert [i.id for i in plan.instances_of("api")] == [f"api-{h}-{r}" for r, h in enumerate(hosts)]


def test_a_per_host_service_runs_on_each_host_at_the_same_ports_and_programs_use_their_own_host_s():
    """The proxy placed per host: one instance on each host, all at its ports; a program calls the
    proxy (and any per-host dependency) of its own host."""
    text = SMALL.replace("    ports: {stats: 8001}\n", "    ports: {stats: 8001}\n    placement: {per_host: true}\n")
    plan = make_plan(parse_spec(text), THREE)
    assert [(i.id, i.port, i.ports) for i in plan.instances_of("mesh-proxy")] == [
        (f"mesh-proxy-{h}-0", 8000, {"stats": 8001}) for h in "abc"]
    assert [plan.render(i, "{proxy.url}") for i in plan.instances_of("api")] == [
        "http://10.1.1.1:8000", "http://10.1.1.2:8000", "http://10.1.1.3:8000"]
    # a service on one host only: every dependent is configured with it, wherever it runs
    assert {plan.render(i, "{services.redis.address}") for i in plan.instances_of("api")} == {"10.1.1.1"}


def test_a_program_reaches_a_service_of_another_host_at_its_own_host_s_address_through_its_proxy():
    """With a proxy (and its inbound port) on every host, a dependency, the registry or the trace
    store that runs on other hosts only is reached at the program's own host's address and the
    service's port (the proxy's tunnel); on one host, or without an inbound port, directly."""
    text = SMALL.replace("    ports: {stats: 8001}\n", "    ports: {stats: 8001, inbound: 8016}\n    placement: {per_host: true}\n")
    text = text.replace("  - name: redis\n", "  - name: redis\n    placement: {hosts: [a]}\n")
    text = text.replace("  - name: consul\n", "  - name: consul\n    placement: {hosts: [a]}\n")
    names = frozenset({"a", "b", "c", "web", "db"})
    plan = make_plan(parse_spec(text, inventory=names), THREE)
    api_b = next(i for i in plan.instances_of("api") if i.host.name == "b")
    assert plan.render(api_b, "{services.redis.address}:{services.redis.port} {consul.addr}") == "10.1.1.2:6379 10.1.1.2:8500"
    assert plan.tunnelled(THREE[1]) == ["consul", "redis"] and plan.tunnelled(THREE[0]) == []
    api_a = next(i for i in plan.instances_of("api") if i.host.name == "a")
    assert plan.render(api_a, "{services.redis.address} {consul.addr}") == "10.1.1.1 10.1.1.1:8500"  # its own host's
    one = make_plan(parse_spec(text, inventory=names), THREE[:1])
    assert one.inbound_port(one.instances_of("mesh-proxy")[0]) is None and one.tunnelled(THREE[0]) == []
    direct = make_plan(parse_spec(text.replace(", inbound: 8016", ""), inventory=names), THREE)
    assert direct.render(api_b, "{services.redis.address}") == "10.1.1.1" and direct.tunnelled(THREE[1]) == []


def test_per_host_with_replicas_is_refused_where_it_stands():
    text = SMALL.replace("    replicas: 3\n", "    replicas: 3\n    placement: {per_host: true}\n")
    with pytest.raises(SpecInvalid) as err:
        parse_spec(text, "mesh.yaml")
    (line,) = err.value.lines("nothing was changed")[:1]
    assert f"mesh.yaml:{text.splitlines().index('    replicas: 3') + 1}:15: " in line and "leave replicas at 1" in line


def test_the_registry_s_host_is_the_agent_s_or_with_a_real_consul_the_first():
    """The host that keeps the management token and puts the mesh-wide registry state."""
    names = frozenset({"a", "b", "c", "web", "db"})
    spec = parse_spec(SMALL.replace("  - name: consul\n", "  - name: consul\n    placement: {hosts: [c]}\n"),
                      inventory=names)
    assert make_plan(spec, THREE).registry_host.name == "c"
    assert make_plan(spec, THREE, external_consul="10.1.1.9:8500").registry_host.name == "a"
    assert [h.name for h in make_plan(spec, THREE).rolling_order] == ["c", "a", "b"]  # a rolling deploy's order


def test_a_placement_that_names_no_inventory_host_is_refused_where_it_stands():
    with pytest.raises(SpecInvalid) as err:
        parse_spec(placed_spec("{hosts: [web, cache]}"), "mesh.yaml", inventory=frozenset({"a", "web"}))
    (line,) = err.value.lines("nothing was changed")[:1]
    row = placed_spec("{hosts: [web, cache]}").splitlines().index("    placement: {hosts: [web, cache]}") + 1
    assert line.startswith(f"mesh.yaml:{row}:30: ") and "'cache' names no host or group of the inventory" in line
    assert "it has: a, web" in line


def test_placeholders_render_per_instance(spec):
    plan = make_plan(spec, [LOCAL], port_offset=10, state_dir="/srv/mesh", meshspec_bin="/opt/meshspec")
    api1 = plan.instances_of("api")[1]
    rendered = [plan.render(api1, t) for t in plan.service("api").process.command]
    assert rendered == ["api", "--listen", "127.0.0.1:9110", "--redis", "127.0.0.1:6389"]
    env = {k: plan.render(api1, v) for k, v in plan.service("api").process.env.items()}
    assert env == {"CONSUL": "127.0.0.1:8510", "PROXY": "http://127.0.0.1:8010", "STATS": "http://127.0.0.1:6389"}
    redis = plan.instances_of("redis")[0]
    assert plan.render(redis, "{state_dir}") == "/srv/mesh/instances/redis-local-0"
    assert plan.render(plan.instances_of("consul")[0], "{meshspec} {{literal}}") == "/opt/meshspec {literal}"


def test_plan_is_pure_data(spec):
    assert make_plan(spec, [LOCAL]) == make_plan(spec, [LOCAL])


def test_shipped_spec_plans_47_instances_with_unique_ids_and_ports():
    plan = make_plan(load_spec(REPO / "mesh_spec.yaml"), [LOCAL])
    ports = [p for i in plan.instances for p in (i.port, *i.ports.values())]
    assert len(plan.instances) == 47  # 41 services; backend-api x3, five more x2
    assert len({i.id for i in plan.instances}) == 47
    assert len(set(ports)) == len(ports)


def test_every_shipped_placeholder_renders():
    plan = make_plan(load_spec(REPO / "mesh_spec.yaml"), [LOCAL], port_offset=20000)
    from meshspec.spec.placeholders import PROBE_NAMES, fields_of, probe_texts, templated_texts

    for inst in plan.instances:
        values = plan.values_for(inst)
        for _, text in templated_texts(plan.service(inst.service)):
            assert set(fields_of(text)) <= set(values), text
            plan.render(inst, text)  # {{ and }} stay literal braces
        for _, text in probe_texts(plan.service(inst.service)):
            assert set(fields_of(text)) <= set(values) | set(PROBE_NAMES), text
            plan.render(inst, text, nonce="n")


INSTALLS = """
version: 1
mesh: {name: t}
services:
  - {name: consul, kind: core, description: r, port: 8500, process: {command: [agent]}, health: {tcp: {}}, routing: {enabled: false}}
  - {name: mesh-proxy, kind: core, description: p, port: 8000, ports: {stats: 8001}, process: {command: [haproxy]}, health: {tcp: {}}, routing: {enabled: false}}
  - name: fetch
    kind: core
    description: pip and an `after` step naming its install dir
    port: 9300
    process:
      install: {pip: [mcp-proxy==0.13.0], after: [["{install_dir}/venv/bin/python", -c, "pass"]]}
      command: ["{install_dir}/venv/bin/mcp-proxy", "{port}"]
    health: {tcp: {}}
"""


def test_installs_live_in_the_host_cache_named_by_their_recipe():
    """{install_dir} is <cache>/<service>-<digest of the recipe as declared>, not under the state dir."""
    from meshspec.plan.layout import install_key

    spec = parse_spec(INSTALLS)
    plan = make_plan(spec, [LOCAL], state_dir="/srv/mesh")
    install = plan.service("fetch").process.install
    expected = f"/var/cache/meshspec/fetch-{install_key(install)}"
    assert str(plan.install_dir("fetch")) == expected
    fetch = plan.instances_of("fetch")[0]
    assert plan.render(fetch, "{install_dir}/venv/bin/mcp-proxy") == f"{expected}/venv/bin/mcp-proxy"
    assert str(make_plan(spec, [LOCAL], cache_dir="/c").install_dir("fetch")) == f"/c/fetch-{install_key(install)}"


def test_two_meshes_of_one_spec_share_their_installs():
    """Another state dir and port offset (the test mesh beside yours) name the same install directories."""
    spec = parse_spec(INSTALLS)
    mine, tests = make_plan(spec, [LOCAL]), make_plan(spec, [LOCAL], port_offset=20000, state_dir="/tmp/meshspec-test")
    assert mine.install_dir("fetch") == tests.install_dir("fetch")


def test_a_changed_pin_or_step_names_another_install_directory():
    spec = parse_spec(INSTALLS)
    for changed in (INSTALLS.replace("mcp-proxy==0.13.0", "mcp-proxy==0.14.0"), INSTALLS.replace('"pass"', '"import os"')):
        assert make_plan(parse_spec(changed), [LOCAL]).install_dir("fetch") != make_plan(spec, [LOCAL]).install_dir("fetch")


def test_the_install_key_is_of_the_recipe_before_its_install_dir_is_substituted():
    """The directory's name holds the key, so the key cannot depend on the directory; without
    `after`, it is the stamp's recipe hash as before."""
    from meshspec.plan.layout import install_key
    from meshspec.render.installs import recipe

    install = make_plan(parse_spec(INSTALLS), [LOCAL]).service("fetch").process.install
    assert recipe("fetch", "/a/x", install).hash != recipe("fetch", "/b/x", install).hash  # the stamp follows the dir
    assert install_key(install) == install_key(install.model_copy())
    plain = install.model_copy(update={"after": []})
    assert install_key(plain) == recipe("fetch", "/a/x", plain).hash


def test_in_the_docker_runtime_installs_stay_in_the_images():
    plan = make_plan(parse_spec(INSTALLS), [LOCAL], install_root="/opt/meshspec/install")
    assert str(plan.install_dir("fetch")) == "/opt/meshspec/install/fetch"


def test_teardown_removes_no_install():
    """Installs are in the shared cache (make purge empties it); the state dir's former install dir goes."""
    from meshspec.plan.layout import FORMER, OWNED

    assert "install" not in OWNED and FORMER == ("install",)


def test_the_deploy_reaches_each_host_s_agent_where_its_programs_do_through_its_ssh():
    """A host's instances are registered with the agent its programs and checker use, reached through
    the host's SSH connection (converge.forward); @local's, directly."""
    from meshspec.converge.registry import Registry, agent_of

    names = frozenset({"a", "b", "c", "web", "db"})
    text = SMALL.replace("    ports: {stats: 8001}\n", "    ports: {stats: 8001, inbound: 8016}\n    placement: {per_host: true}\n")
    plan = make_plan(parse_spec(text.replace("  - name: consul\n", "  - name: consul\n    placement: {hosts: [a]}\n"),
                                inventory=names), THREE)
    deployer_s = Registry.from_addr(plan.consul_addr, embedded=True)
    assert agent_of(plan, "b", deployer_s) == Registry("10.1.1.2", 8500, embedded=True, through="b")  # b's proxy's tunnel
    assert agent_of(plan, "a", deployer_s) == Registry("10.1.1.1", 8500, embedded=True, through="a")
    real = make_plan(parse_spec(text, inventory=names), THREE, external_consul="127.0.0.1:8500")
    assert agent_of(real, "c", deployer_s).where == "127.0.0.1:8500 (as c reaches it, over SSH)"  # c's own agent
    local = make_plan(parse_spec(text), [Host("@local", "127.0.0.1")])
    assert agent_of(local, "@local", deployer_s) is deployer_s
