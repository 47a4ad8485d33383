"""The proxy's pure parts: haproxy.cfg rendering, its shape, and the controller's reconcile step."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from meshspec.common.haproxy_shape import read_shape, server_id
from meshspec.plan import make_plan
from meshspec.plan.hosts import Host
from meshspec.render.haproxy import backend_name, config_shape, proxy_paths, render_haproxy, server_options, stats_users
from meshspec.runtime.proxy.apply import ReloadError, master_cli
from meshspec.runtime.proxy.reconcile import (
    Endpoint,
    inbound_entries,
    parse_health,
    reconcile,
    reconcile_backend,
    reconcile_tunnel,
)
from meshspec.runtime.proxy.runtime_api import (
    PEERS_RESYNC_FINISHED,
    ServerState,
    parse_peers_flags,
    parse_servers_state,
)
from meshspec.spec import load_spec
from meshspec.spec.models import HealthTiming, Routing
from meshspec.spec.resolve import effective_health_timing
from tests.proxy.harness import proxy_users, write_proxy_files
from tests.proxy.meshes import make_mesh, service

PROXY = (42100, 42101, 42102)
EVERY_POLICY = [
    service("rr", 42200, 3),
    service("lc", 42210, 2, {"lb": {"policy": "least_conn"}}),
    service("wt", 42220, 3, {"lb": {"policy": "weighted", "weights": [1, 3, 0]}}),
    service("hh", 42230, 2, {"lb": {"policy": "hash", "hash_on": {"header": "X-User"}}}),
    service("hc", 42240, 2, {"lb": {"policy": "hash", "hash_on": {"cookie": "sid"}}}),
    service("hs", 42250, 2, {"lb": {"policy": "hash", "hash_on": {"source": True}}}),
    service("mcp1", 42260, 2, {"affinity": "mcp_session"}, {"mcp": {}}, kind="mcp"),
    service("src", 42270, 1, {"affinity": "source", "path_prefix": "/api/v1.x"}),
    service("tmo", 42280, 1, {"timeouts": {"connect": "500ms", "request": "3s",
                                           "paths": {"/slow/er": "40s", "/slow": "20s"}},
                              "retries": {"attempts": 4, "retry_on": ["conn-failure", 503]},
                              "circuit_breaker": {"errors": 7, "cooldown": "4s"}}),
    service("noretry", 42290, 1, {"retries": {"attempts": 0}, "circuit_breaker": {"enabled": False}},
            {"tcp": {}}),
    service("db", 42300, 1, {"mode": "tcp"}),
    service("off", 42310, 1, {"enabled": False}),
]


@pytest.fixture
def plan(tmp_path):
    return make_mesh(EVERY_POLICY, PROXY, tmp_path)


def section(cfg: str, head: str) -> list[str]:
    lines = cfg.splitlines()
    start = lines.index(head)
    body = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        body.append(line.strip())
    return body


def test_one_backend_per_routed_http_service_only(plan):
    cfg = render_haproxy(plan)
    backends = {line.split()[1] for line in cfg.splitlines() if line.startswith("backend svc_")}
    assert backends == {backend_name(n) for n in ("rr", "lc", "wt", "hh", "hc", "hs", "mcp1", "src", "tmo", "noretry")}


@pytest.mark.parametrize(("name", "expected"), [
    ("rr", ["balance roundrobin"]),
    ("lc", ["balance leastconn"]),
    ("wt", ["balance roundrobin"]),
    ("hh", ["balance hdr(X-User)", "hash-type consistent"]),
    ("hc", ["balance hash req.cook(sid)", "hash-type consistent"]),
    ("hs", ["balance source", "hash-type consistent"]),
])
def test_lb_policy(plan, name, expected):
    body = section(render_haproxy(plan), f"backend svc_{name}")
    assert [line for line in body if line.startswith(("balance", "hash-type"))] == expected


def test_weights_per_replica(plan):
    body = section(render_haproxy(plan), "backend svc_wt")
    weights = {line.split()[1]: line.split()[line.split().index("weight") + 1] for line in body
               if line.startswith("server wt-")}
    assert weights == {"wt-local-0": "1", "wt-local-1": "3", "wt-local-2": "0"}


def test_servers_from_the_plan_with_checks_stable_ids_and_spares(plan):
    body = section(render_haproxy(plan), "backend svc_rr")
    servers = [line for line in body if line.startswith("server ")]
    assert servers[0].startswith(f"server rr-local-0 127.0.0.1:42200 id {server_id('rr-local-0')} weight 1 check ")
    assert [s.split()[1] for s in servers] == ["rr-local-0", "rr-local-1", "rr-local-2",
                                               "spare-1", "spare-2", "spare-3", "spare-4"]
    assert all(" disabled " in s for s in servers[3:])
    assert "option httpchk" in body and "http-check send meth GET uri /health" in body


def test_timeouts_retries_and_breaker(plan):
    body = section(render_haproxy(plan), "backend svc_tmo")
    assert "timeout connect 500ms" in body and "timeout server 3000ms" in body
    # every matching rule applies in turn: the longest prefix comes last and stands
    assert [line for line in body if "set-timeout" in line] == [
        "http-request set-timeout server 20000ms if { path_beg /slow }",
        "http-request set-timeout server 40000ms if { path_beg /slow/er }"]
    assert "retries 4" in body and "retry-on conn-failure 503" in body and "option redispatch 1" in body
    assert "http-request disable-l7-retry if { method POST PATCH }" in body  # never twice (test_dataplane)
    server = next(line for line in body if line.startswith("server tmo-local-0"))
    assert "observe layer7 error-limit 7 on-error mark-down" in server
    assert "fastinter 4000ms downinter 4000ms rise 1 fall 1" in server
    assert f"timeout check {effective_health_timing(plan.spec, plan.service('tmo')).timeout}ms" in body


def test_no_retries_no_breaker_and_tcp_check(plan):
    body = section(render_haproxy(plan), "backend svc_noretry")
    assert "retries 0" in body and "retry-on none" in body and "option redispatch 1" not in body
    assert "option httpchk" not in body  # a tcp probe: TCP connect check
    server = next(line for line in body if line.startswith("server noretry-local-0"))
    assert "observe" not in server and " check " in server


def test_mcp_session_affinity_survives_reloads_through_peers(plan):
    cfg = render_haproxy(plan)
    body = section(cfg, "backend svc_mcp1")
    assert "stick-table type string len 64 size 100k expire 1h peers mesh" in body
    assert "stick store-response res.hdr(mcp-session-id)" in body
    assert "stick match req.hdr(mcp-session-id)" in body
    assert "option httpchk" not in body  # an MCP probe is never an HTTP check (would leak sessions)
    peers = section(cfg, "peers mesh")
    assert peers[1] == "server mesh-proxy-local-0"
    assert "localpeer mesh-proxy-local-0" in section(cfg, "global")


def test_source_affinity(plan):
    body = section(render_haproxy(plan), "backend svc_src")
    assert "stick on src" in body and any(line.startswith("stick-table type ip ") for line in body)


def test_routes_prefix_mcp_and_host(plan):
    front = section(render_haproxy(plan), "frontend mesh")
    assert any("{ path /svc/rr }" in line and "{ path_beg /svc/rr/ }" in line for line in front)
    assert "http-request set-path %[path,regsub(^/svc/rr/?,/)] if { var(txn.svc) -m str rr } " \
           "{ var(txn.via) -m str prefix }" in front
    assert any("{ path_beg /api/v1.x/ }" in line for line in front)
    assert any("regsub(^/api/v1[.]x/?,/)" in line for line in front)  # '.' is literal
    assert any("{ path /mcp/mcp1 }" in line for line in front)
    assert "http-request set-path /mcp if { var(txn.svc) -m str mcp1 } { var(txn.via) -m str mcp }" in front
    assert any("req.hdr(host),field(1,:),lower -m str rr.mesh" in line for line in front)
    assert "use_backend svc_rr if { var(txn.svc) -m str rr }" in front
    assert not any("svc_db" in line or "svc_off" in line for line in front)
    assert "monitor-uri /healthz" in front


def test_trace_context_request_id_and_json_log(plan):
    front = section(render_haproxy(plan), "frontend mesh")
    assert "unique-id-format %[uuid(4),regsub(-,,g)]" in front
    assert any(line.startswith("http-request set-header traceparent 00-%[unique-id]-") and
               line.endswith("unless { req.hdr(traceparent) -m found }") for line in front)
    log_format = next(line for line in front if line.startswith("log-format"))
    assert '"request_id":"%ID"' in log_format and '"traceparent":"%[capture.req.hdr(0)]"' in log_format


def test_rate_limits_answer_429_with_retry_after(tmp_path):
    services = [{**s, "routing": {**s["routing"], "rate_limit": 7}} if s["name"] == "rr" else s for s in EVERY_POLICY]
    plan = make_mesh(services, PROXY, tmp_path, defaults={"routing": {"rate_limit": 50}},
                     proxy={"rate_limits": {"window": "2s", "client": 5}},
                     consumers=[{"name": "ci", "rate_limit": 100}, {"name": "ide"}])
    front = section(render_haproxy(plan), "frontend mesh")
    assert "http-request track-sc0 var(txn.who) table rate_client" in front
    assert ('http-request return status 429 content-type text/plain string "rate limited (client)" hdr Retry-After 2 '
            'if !{ var(txn.consumer) -m str ci } { sc_http_req_rate(0) gt 10 }') in front
    assert any("(consumer ci)" in line and "!{ ssl_fc } { var(txn.consumer) -m str ci } { sc_http_req_rate(0) gt 200 }"
               in line for line in front)
    assert any("{ var(txn.svc) -m str rr } { sc_http_req_rate(1) gt 14 }" in line for line in front)
    assert any("{ var(txn.svc) -m str lc } { sc_http_req_rate(1) gt 100 }" in line for line in front)
    assert not any("track-sc2" in line for line in front)  # no tool limits, no tool counter
    off = make_mesh(EVERY_POLICY, PROXY, tmp_path, defaults={"routing": {"rate_limit": 0}},
                    proxy={"rate_limits": {"client": 0}})
    assert not any("429" in line for line in section(render_haproxy(off), "frontend mesh"))


def test_a_tool_rate_limit_counts_the_tool_the_proxy_read_from_the_body(tmp_path):
    mcp = service("m", 9300, 1, {"tool_rate_limits": {"run": 3}}, {"mcp": {}}, kind="mcp")
    front = section(render_haproxy(make_mesh([mcp], PROXY, tmp_path)), "frontend mesh")
    assert "http-request set-var(txn.mcp_tool) req.body,json_query('$.params.name') if { var(txn.svc) -m str m } " \
           "{ var(txn.mcp_method) -m str tools/call }" in front
    assert "http-request track-sc2 var(txn.svc),concat(/,txn.mcp_tool) table rate_tool if { var(txn.mcp_tool) -m found }" in front
    assert any('"rate limited (tool run)"' in line and "{ var(txn.svc) -m str m } { var(txn.mcp_tool) -m str run } "
               "{ sc_http_req_rate(2) gt 30 }" in line for line in front)
    at = {what: next(i for i, line in enumerate(front) if what in line) for what in ("track-sc2", "set-var(txn.mcp_tool)")}
    assert at["track-sc2"] > at["set-var(txn.mcp_tool)"]


def test_listeners_runtime_api_and_stats(plan):
    cfg = render_haproxy(plan)
    glob = section(cfg, "global")
    assert "master-worker" in glob
    assert "stats socket ipv4@127.0.0.1:42102 level admin expose-fd listeners" in glob
    stats = section(cfg, "frontend stats")
    assert stats[0] == "bind 127.0.0.1:42101"
    assert "http-request use-service prometheus-exporter if { path /metrics }" in stats
    assert section(cfg, "frontend mesh")[0] == "bind 127.0.0.1:42100"


def test_shape_ignores_membership_and_is_embedded(tmp_path):
    two = make_mesh([service("rr", 42200, 2)], PROXY, tmp_path)
    three = make_mesh([service("rr", 42200, 3)], PROXY, tmp_path)
    other = make_mesh([service("rr", 42200, 2, {"lb": {"policy": "least_conn"}})], PROXY, tmp_path)
    assert config_shape(two)["hash"] != config_shape(other)["hash"]
    assert render_haproxy(two) != render_haproxy(three)
    shape = read_shape(render_haproxy(two))
    assert shape == config_shape(two)
    assert shape["backends"]["svc_rr"]["service"] == "rr"
    assert "server membership (spare slots, add/del server)" in shape["runtime_only"]
    # membership lives in "planned", outside the policy; the policy part is equal
    assert {k: v for k, v in config_shape(three)["backends"]["svc_rr"].items() if k != "planned"} == \
           {k: v for k, v in shape["backends"]["svc_rr"].items() if k != "planned"}


def test_rendering_is_pure(plan):
    assert render_haproxy(plan) == render_haproxy(plan)


# --- haproxy -c ----------------------------------------------------------------------------------

needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason="apt-get install haproxy")


def haproxy_check(cfg: str, path: Path) -> subprocess.CompletedProcess:
    """`haproxy -c` of the config with the stats page's userlist beside it, as the proxy loads both."""
    path.write_text(cfg)
    users = path.with_name("users.cfg")
    users.write_text(stats_users("check-password"))
    return subprocess.run(["haproxy", "-c", "-f", str(path), "-f", str(users)], capture_output=True, text=True)


@needs_haproxy
def test_haproxy_accepts_a_plan_with_every_policy(plan, tmp_path):
    result = haproxy_check(render_haproxy(plan), tmp_path / "h.cfg")
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = [line for line in (result.stdout + result.stderr).splitlines() if "ALERT" in line]
    assert alerts == []


@needs_haproxy
def test_haproxy_accepts_the_repository_spec(repo):
    spec = load_spec(repo / "mesh_spec.yaml")
    # the state dir as short as a user's: HAProxy takes a runtime socket path of 97 characters at most
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="ms-") as root:
        plan = make_plan(spec, [Host("@local", "127.0.0.1")], 0, root)
        proxy_users(plan)  # HAProxy gives its sockets to the controller's user, by name
        write_proxy_files(plan)
        assert f"ssl crt {proxy_paths(plan)['certificate']}" in render_haproxy(plan)
        result = haproxy_check(render_haproxy(plan), Path(root) / "mesh.cfg")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_haproxy
def test_each_host_s_proxy_reaches_the_others_instances_over_mtls_and_serves_its_own(repo):
    """Three hosts: h2's proxy sends to h2's instances directly and to the others' through their
    proxies' inbound listeners (mTLS, the instance named); its own inbound listener serves h2's
    instances alone, to a proxy's certificate; HAProxy accepts the whole file."""
    spec = load_spec(repo / "mesh_spec.yaml")
    hosts = [Host(f"h{n}", f"10.213.0.{n + 1}") for n in (1, 2, 3)]
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="ms-") as root:
        plan = make_plan(spec, hosts, 0, root)
        h2 = plan.instances_of("mesh-proxy")[1]
        proxy_users(plan)
        write_proxy_files(plan, instance=h2)
        cfg = render_haproxy(plan, proxy=h2)
        result = haproxy_check(cfg, Path(root) / "mesh.cfg")
    assert result.returncode == 0, result.stdout + result.stderr
    paths, inbound = proxy_paths(plan, h2), h2.ports["inbound"]
    for inst in plan.instances_of("backend-api"):
        line = next(x.strip() for x in cfg.splitlines() if x.strip().startswith(f"server {inst.id} "))
        if inst.host == h2.host:
            assert line.startswith(f"server {inst.id} {inst.address}:{inst.port} id ") and "ssl" not in line
        else:
            assert line.startswith(f"server {inst.id} {inst.address}:{inbound} ssl crt {paths['certificate']} "
                                   f"ca-file {paths['ca']} verify required sni str({inst.id}.mesh-proxy) "
                                   f"check-sni {inst.id}.mesh-proxy "), line
    front = cfg[cfg.index("frontend inbound"):].split("\n\n")[0]
    assert f"bind {h2.address}:{inbound} ssl crt {paths['certificate']} ca-file {paths['ca']} verify required" in front
    assert "tcp-request content reject unless { ssl_c_s_dn(CN) -m str mesh-proxy }" in front
    routes = dict(line.split("int(")[1].split(") if { ssl_fc_sni -m str ") for line in front.splitlines()
                  if "set-dst-port int(" in line)
    served = {name.rstrip(" }"): int(port) for port, name in routes.items()}
    mine = {f"{i.id}.mesh-proxy": i.port for i in plan.instances if i.host == h2.host and f"{i.id}.mesh-proxy" in served}
    metrics = {f"port-{plan.metrics_port(i)}.mesh-proxy": plan.metrics_port(i) for i in plan.instances
               if i.host == h2.host and plan.metrics_port(i)}
    assert mine and served == mine | metrics  # its instances, and its metrics ports for the others' scrapes
    assert all(f"{i.id}.mesh-proxy" not in front for i in plan.instances if i.host != h2.host)
    # beyond the plan, the names the controller puts in the inbound map (reconcile.inbound_entries),
    # the plan's own ports winning
    registered = f"ssl_fc_sni,map_str_int({paths['inbound']})"
    rules = [line.strip() for line in front.splitlines() if line.strip().startswith("tcp-request content")]
    assert rules[1].endswith(f"}} or {{ {registered} -m found }}")
    assert rules[2] == f"tcp-request content set-dst-port {registered} if {{ {registered} -m found }}"
    assert all("set-dst-port int(" in rule for rule in rules[3:])
    assert config_shape(plan, proxy=h2)["peers"]["map"] == paths["inbound"]
    # its egress listener, for its own programs (loopback): another host's target over mTLS alone
    egress = cfg[cfg.index("frontend egress"):]
    assert f"bind 127.0.0.1:{h2.ports['egress']}" in egress and "unless { var(txn.ip) -m str 10.213.0.2 10.213.0.4 }" in egress
    assert (f"server peer 0.0.0.0:0 ssl crt {paths['certificate']} ca-file {paths['ca']} verify required "
            "sni str(port-),concat(,txn.port,.mesh-proxy)") in egress
    # a tunnel (the registry, on h1 only) tries its instances unchecked while every checked one is
    # down: after a partition heals, its checks lag the link by up to two 5 s intervals
    tunnel = [line.split() for line in cfg[cfg.index("listen tunnel_consul"):].split("\n\n")[0].splitlines()]
    assert ["option", "allbackups"] in tunnel
    consul = plan.instances_of("consul")[0]
    servers = [(s[1], s[2], "check" in s, "backup" in s) for s in tunnel if s[0] == "server"]
    assert servers == [(consul.id, f"{consul.address}:{inbound}", True, False),
                       (f"{consul.id}-unchecked", f"{consul.address}:{inbound}", False, True)]
    # and the controller adds the registry's instances beyond those (reconcile_tunnel)
    tunnels = config_shape(plan, proxy=h2)["tunnels"]
    assert tunnels["tunnel_consul"]["planned"] == [s[1] for s in tunnel if s[0] == "server"]
    assert {t["service"] for t in tunnels.values()} == set(plan.tunnelled(h2.host))
    assert config_shape(plan, proxy=h2)["listen"]["runtime"] == plan.proxy_runtime_of(h2) != plan.proxy_runtime


def test_a_check_uri_has_the_instance_placeholders_filled_and_no_nonce(repo, tmp_path):
    plan = make_plan(load_spec(repo / "mesh_spec.yaml"), [Host("@local", "127.0.0.1")], 20000, str(tmp_path))
    checks = [line.strip() for line in render_haproxy(plan).splitlines() if line.strip().startswith("http-check send")]
    blackbox = plan.instances_of("blackbox-exporter")[0]
    assert f"http-check send meth GET uri /probe?module=http_2xx&target={blackbox.address}:{blackbox.port}/-/healthy" in checks
    assert not [line for line in checks if "{" in line], checks  # a nonce is the checker's; HAProxy only reads
    # A probe that reads a page before its own request: HAProxy reads that page, and stores nothing.
    assert "http-check send meth GET uri /api/v2/heartbeat" in checks  # chromadb, whose probe then creates a collection
    assert "http-check send meth GET uri /" in checks  # the frontend's page, not its registry read


# --- the controller's pure step ------------------------------------------------------------------

SHAPE = {"spares": ["spare-1", "spare-2"], "planned": ["a-local-0", "a-local-1"], "server_options": "check",
         "replica_weights": []}


def srv(name, sid, port, admin=0, addr="127.0.0.1", weight=1, op=2):
    return ServerState("svc_a", name, sid, addr, port, op, admin, weight)


def current():
    return [srv("a-local-0", 1001, 5000), srv("a-local-1", 1002, 5001),
            srv("spare-1", 1, 1, admin=4 | 1), srv("spare-2", 2, 1, admin=4 | 1)]


def ep(eid, port, status="passing"):
    return Endpoint(eid, "127.0.0.1", port, status)


def commands(result):
    return [c for change in result.changes for c in change.commands]


def test_in_sync_means_no_change():
    result = reconcile_backend("svc_a", SHAPE, current(), [ep("a-local-0", 5000), ep("a-local-1", 5001)])
    assert result.changes == [] and result.gone == set()


def test_new_instance_fills_a_spare_slot():
    eps = [ep("a-local-0", 5000), ep("a-local-1", 5001), ep("a-other-7", 6000)]
    assert commands(reconcile_backend("svc_a", SHAPE, current(), eps)) == [
        "set server svc_a/spare-1 addr 127.0.0.1 port 6000",
        "set server svc_a/spare-1 health up",
        "set server svc_a/spare-1 state ready",
    ]


def test_a_filled_slot_is_found_by_address():
    servers = current()
    servers[2] = srv("spare-1", 1, 6000, admin=4)
    eps = [ep("a-local-0", 5000), ep("a-local-1", 5001), ep("a-other-7", 6000)]
    assert reconcile_backend("svc_a", SHAPE, servers, eps).changes == []


def test_add_server_when_no_slot_is_free():
    eps = [ep("a-local-0", 5000), ep("a-local-1", 5001), ep("x-1", 6001), ep("x-2", 6002), ep("x-3", 6003)]
    result = reconcile_backend("svc_a", SHAPE, current(), eps)
    add = next(c for c in result.changes if c.kind == "add")
    assert add.server == "x-3"
    assert add.commands[0] == f"add server svc_a/x-3 127.0.0.1:6003 id {server_id('x-3')} weight 1 check"
    assert add.commands[1:] == ("enable health svc_a/x-3", "set server svc_a/x-3 health up",
                                "set server svc_a/x-3 state ready")


def test_critical_is_maint_warning_is_drain_and_back():
    eps = [ep("a-local-0", 5000, "critical"), ep("a-local-1", 5001, "warning")]
    assert commands(reconcile_backend("svc_a", SHAPE, current(), eps)) == [
        "set server svc_a/a-local-0 state maint", "set server svc_a/a-local-1 state drain"]
    servers = current()
    servers[0] = srv("a-local-0", 1001, 5000, admin=1)
    assert commands(reconcile_backend("svc_a", SHAPE, servers, [ep("a-local-0", 5000), ep("a-local-1", 5001)])) == [
        "set server svc_a/a-local-0 health up", "set server svc_a/a-local-0 state ready"]


def test_deregistered_drains_then_goes_to_maint_and_runtime_servers_are_deleted():
    servers = current() + [srv("x-9", 5555, 7000)]
    result = reconcile_backend("svc_a", SHAPE, servers, [ep("a-local-1", 5001)])
    assert commands(result) == ["set server svc_a/a-local-0 state drain", "set server svc_a/x-9 state drain"]
    assert result.gone == {("svc_a", "a-local-0"), ("svc_a", "x-9")}
    servers = current()[1:] + [srv("a-local-0", 1001, 5000, admin=8), srv("x-9", 5555, 7000, admin=8)]
    later = reconcile_backend("svc_a", SHAPE, servers, [ep("a-local-1", 5001)], expired={"a-local-0", "x-9"})
    assert commands(later) == ["set server svc_a/a-local-0 state maint", "set server svc_a/x-9 state maint"]
    servers = current()[1:] + [srv("a-local-0", 1001, 5000, admin=1), srv("x-9", 5555, 7000, admin=1)]
    assert commands(reconcile_backend("svc_a", SHAPE, servers, [ep("a-local-1", 5001)])) == ["del server svc_a/x-9"]


def test_moved_instance_gets_its_new_address():
    eps = [ep("a-local-0", 5100), ep("a-local-1", 5001)]
    assert commands(reconcile_backend("svc_a", SHAPE, current(), eps)) == [
        "set server svc_a/a-local-0 addr 127.0.0.1 port 5100",
        "set server svc_a/a-local-0 health up", "set server svc_a/a-local-0 state ready"]


def test_weights_follow_the_replica():
    shape = {**SHAPE, "replica_weights": [1, 3]}
    eps = [ep("a-local-0", 5000), ep("a-local-1", 5001)]
    assert commands(reconcile_backend("svc_a", shape, current(), eps)) == ["set server svc_a/a-local-1 weight 3"]


PEERS = {"address": "127.0.0.1", "port": 9016, "options": "ssl sni str({name})", "name": "{id}.mesh-proxy"}


def test_an_instance_of_another_host_is_reached_through_its_hosts_proxy_over_tls():
    """Another host's instance: its host's address at the inbound port, TLS named for it; never a
    spare slot (those have no TLS). This host's instances stay direct."""
    eps = [ep("a-local-0", 5000), ep("a-local-1", 5001), Endpoint("a-h2-2", "10.0.0.3", 5002, "passing")]
    assert commands(reconcile_backend("svc_a", SHAPE, current(), eps, peers=PEERS)) == [
        f"add server svc_a/a-h2-2 10.0.0.3:9016 id {server_id('a-h2-2')} weight 1 check ssl sni str(a-h2-2.mesh-proxy)",
        "enable health svc_a/a-h2-2", "set server svc_a/a-h2-2 health up", "set server svc_a/a-h2-2 state ready"]
    # once there (as a planned server of another host is rendered), it is in sync: no move to its own port
    servers = current() + [srv("a-h2-2", server_id("a-h2-2"), 9016, addr="10.0.0.3")]
    assert reconcile_backend("svc_a", SHAPE, servers, eps, peers=PEERS).changes == []
    # without an inbound port (no peers), every instance is reached directly, as on one host
    assert commands(reconcile_backend("svc_a", SHAPE, current(), eps))[0] == "set server svc_a/spare-1 addr 10.0.0.3 port 5002"


def test_the_inbound_map_is_every_instance_the_registry_lists_at_this_host():
    """Planned or not (haproxy.cfg names the planned ones too): the name another host's proxy asks
    for (target_of's), to the instance's own port; none of another host's; none without peers."""
    peers = {**PEERS, "map": "/srv/inbound.map"}
    endpoints = {"a": [ep("a-local-0", 5000), Endpoint("a-h2-2", "10.0.0.3", 5002, "passing")],
                 "b": [Endpoint("by-hand", "127.0.0.1", 6100, "critical")]}
    assert inbound_entries(endpoints, peers) == {"a-local-0.mesh-proxy": "5000", "by-hand.mesh-proxy": "6100"}
    assert inbound_entries(endpoints, PEERS) == inbound_entries(endpoints, None) == {}


def test_a_tunnel_follows_the_instances_beyond_its_plan_and_leaves_its_planned_ones_to_its_checks():
    """h2's tunnel to a database on h1: an instance registered by hand on h3 is added, through h3's
    proxy, follows its state in the registry, and goes when no longer listed; the planned server
    and its unchecked backup are left alone whatever the registry says of them."""
    tunnel = {"service": "db", "planned": ["db-h1-0", "db-h1-0-unchecked"], "server_options": "check inter 5000ms"}
    peers = {**PEERS, "address": "10.0.0.3"}

    def server(name, sid, admin=0):
        return ServerState("tunnel_db", name, sid, "10.0.0.2" if name.startswith("db-h1") else "10.0.0.4", 9016, 2, admin, 1)

    planned = [server("db-h1-0", 1), server("db-h1-0-unchecked", 2)]
    eps = [Endpoint("db-h1-0", "10.0.0.2", 5432, "critical"), Endpoint("db-by-hand", "10.0.0.4", 5433, "passing")]
    ref = "tunnel_db/db-by-hand"
    assert commands(reconcile_tunnel("tunnel_db", tunnel, planned, eps, peers)) == [
        f"add server {ref} 10.0.0.4:9016 id {server_id('db-by-hand')} check inter 5000ms ssl sni str(db-by-hand.mesh-proxy)",
        f"enable health {ref}", f"set server {ref} health up", f"set server {ref} state ready"]
    shape = {"backends": {}, "tunnels": {"tunnel_db": tunnel}, "peers": peers}
    assert commands(reconcile(shape, planned, {"db": eps})) == commands(reconcile_tunnel("tunnel_db", tunnel, planned, eps, peers))
    added = planned + [server("db-by-hand", server_id("db-by-hand"))]
    assert reconcile_tunnel("tunnel_db", tunnel, added, eps, peers).changes == []
    critical = [eps[0], Endpoint("db-by-hand", "10.0.0.4", 5433, "critical")]
    assert commands(reconcile_tunnel("tunnel_db", tunnel, added, critical, peers)) == [f"set server {ref} state maint"]
    assert commands(reconcile_tunnel("tunnel_db", tunnel, added, eps[:1], peers)) == [f"set server {ref} state maint"]
    in_maint = planned + [server("db-by-hand", server_id("db-by-hand"), admin=1)]
    assert commands(reconcile_tunnel("tunnel_db", tunnel, in_maint, eps[:1], peers)) == [f"del server {ref}"]


def test_unknown_services_are_left_alone_last_known_good():
    shape = {"backends": {"svc_a": {"service": "a", **SHAPE}}}
    assert reconcile(shape, current(), {}).changes == []  # never heard from Consul: touch nothing
    assert len(reconcile(shape, current(), {"a": []}).changes) == 2  # Consul says: none left


def test_parse_health_takes_the_worst_check_and_skips_other_meshes():
    entries = [
        {"Node": {"Address": "127.0.0.1"}, "Service": {"ID": "a-1", "Address": "", "Port": 1},
         "Checks": [{"Status": "passing"}, {"Status": "warning"}]},
        {"Node": {"Address": "127.0.0.1"}, "Service": {"ID": "a-2", "Address": "127.0.0.2", "Port": 2,
                                                        "Meta": {"mesh": "other"}}, "Checks": []},
        {"Node": {}, "Service": {"ID": "a-3", "Address": "127.0.0.3", "Port": 3}, "Checks": [{"Status": "critical"}]},
    ]
    assert parse_health(entries, mesh="mine") == [Endpoint("a-1", "127.0.0.1", 1, "warning"),
                                                  Endpoint("a-3", "127.0.0.3", 3, "critical")]


def test_parse_servers_state():
    text = ("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
            "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
            "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
            "srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
            "4 b 2 spare1 127.0.0.1 2 12 1 1 0 1 0 0 8 0 0 0 - 4444 - 0 0 - - 0\n")
    [row] = parse_servers_state(text)
    assert (row.backend, row.name, row.id, row.port, row.admin) == ("b", "spare1", 2, 4444, "drain")


def test_parse_peers_flags_reads_each_section_header_not_its_peers():
    text = ("0x55c1d9e2d690: [04/Dec/2026:21:32:48] id=mesh disabled=0 flags=0x11 resync_timeout=4s task_calls=37\n"
            "  0x55c1d9e357c0: id=mesh-proxy-local-0(local,inactive) addr=unix:0 last_status=NONE\n"
            "        flags=0x0\n"
            "0x55c1d9e2d700: [04/Dec/2026:21:32:48] id=other disabled=0 flags=0x103 resync_timeout=<PAST>\n")
    flags = parse_peers_flags(text)
    assert flags == {"mesh": 0x11, "other": 0x103}
    assert [f & PEERS_RESYNC_FINISHED == PEERS_RESYNC_FINISHED for f in flags.values()] == [False, True]


def test_haproxy_damps_like_the_checker_with_fall_capped_at_two():
    """rise/fall follow success_before_passing/failures_before_critical; fall stops at 2, since each
    further failed check costs a whole breaker cooldown (fastinter) before a dead server leaves."""
    damped = server_options(Routing(), HealthTiming(success_before_passing=2, failures_before_critical=3))
    assert "rise 2 fall 2" in damped
    assert "rise 1 fall 1" in server_options(Routing(), HealthTiming())


def test_the_shipped_runtime_api_and_master_cli_are_unix_sockets_of_the_controller_s_user():
    """No TCP listener anyone on the host could use to disable servers: sockets in the proxy's
    state dir, mode 0600, the controller's user's; the controller is given the runtime API's path
    (and finds the master CLI in the master's command line)."""
    shipped = make_plan(load_spec(str(Path(__file__).resolve().parents[2] / "mesh_spec.yaml")), [Host("@local", "127.0.0.1")])
    socket_path = "/srv/meshspec/instances/mesh-proxy-local-0/runtime.sock"
    assert shipped.proxy_runtime == socket_path
    assert (f"stats socket {socket_path} mode 600 user meshspec-proxy level admin expose-fd listeners"
            in render_haproxy(shipped))
    proxy = shipped.instances_of("mesh-proxy")[0]
    haproxy_argv = [shipped.render(proxy, a) for a in shipped.service("mesh-proxy").process.command]
    assert master_cli(haproxy_argv) == "/srv/meshspec/instances/mesh-proxy-local-0/master.sock"
    assert haproxy_argv[haproxy_argv.index("-S") + 1].endswith("master.sock,mode,600,user,meshspec-proxy")
    assert config_shape(shipped)["listen"]["runtime"] == socket_path
    controller = shipped.instances_of("mesh-controller")[0]
    argv = [shipped.render(controller, a) for a in shipped.service("mesh-controller").process.command]
    assert argv[argv.index("--haproxy-runtime") + 1] == socket_path


def test_a_state_dir_too_long_for_the_runtime_socket_is_refused_before_any_change():
    from meshspec.converge.policy import refusal
    from meshspec.plan import Runtime

    spec = load_spec(str(Path(__file__).resolve().parents[2] / "mesh_spec.yaml"))
    deep = make_plan(spec, [Host("@local", "127.0.0.1")], 0, "/srv/" + "x" * 80)
    assert "longer than the 97 characters HAProxy accepts" in refusal(deep, Runtime.PROCESS, ["@local"])
    assert refusal(make_plan(spec, [Host("@local", "127.0.0.1")]), Runtime.PROCESS, ["@local"]) is None


def test_a_master_without_its_cli_socket_is_a_reload_error_that_shows_its_command_line():
    with pytest.raises(ReloadError, match="without a master CLI socket"):
        master_cli(["/usr/sbin/haproxy", "-W", "-db", "-f", "/x/haproxy.cfg"])
    assert master_cli(["haproxy", "-S", "/x/master.sock", "-f", "c"]) == "/x/master.sock"
