"""Plan -> haproxy.cfg of the mesh proxy. Pure: no I/O, the same plan gives the same text.

What is rendered, and why:

* One backend `svc_<name>` per routed service: routing.enabled and mode http. tcp-mode services
  (databases, brokers) and routing.enabled=false ones (the agent, the proxy, the controller) get no
  backend: their clients reach them directly at the address Consul carries.
* Servers: one `server <instance id>` per planned instance (with `check`, weight and a stable `id`),
  plus `spare_slots` disabled `spare-<k>` servers. The controller fills a spare slot (`set server
  addr/port` + `state ready`) for an instance Consul knows but the plan does not; only when every
  slot is taken does it fall back to `add server`. Slots are preferred because their address and
  state survive a reload through `server-state-file` (the controller dumps `show servers state`
  just before it reloads), whereas `add server` servers vanish on reload until re-added.
* Server `id`s are derived from the instance id (`server_id`), so the MCP-session stick table,
  which stores server ids and is handed to the new process through the `peers` section, points at
  the same instance after a reload.
* Membership, addresses, weights-at-runtime and admin state are runtime-only (the controller
  applies them through the runtime API). Everything else is "shape": `config_shape` returns it and
  its hash; a changed shape needs a reload (`meshspec.runtime.proxy.controller.reload_haproxy`).

Health: `option httpchk` on the service's HTTP probe path; other probes get a TCP connect check
(a handshake per check would leak MCP sessions; the host's checker runs the deep probe for
Consul). `rise`/`fall` are the spec's SuccessBeforePassing/FailuresBeforeCritical.
Circuit breaker: `observe layer7 error-limit N on-error mark-down` opens it after N consecutive
5xx/failed responses; `fastinter`/`downinter <cooldown>` re-probe it: the first check comes at most
`cooldown` after it opened (HAProxy moves the next check earlier, never later), then every
`cooldown` while it stays open; `rise` good checks close it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from meshspec.common import nonce, request_log
from meshspec.common.digest import digest, digest_text
from meshspec.common.haproxy_shape import server_id, shape_line
from meshspec.common.jsonrpc import FORBIDDEN, HEADER_MISMATCH, INVALID_REQUEST
from meshspec.plan import LOOPBACK, Instance, Plan
from meshspec.plan.layout import PROXY_CA, PROXY_CERTIFICATE, PROXY_CONSUMERS
from meshspec.render.intentions import consumer_denials, tool_policies
from meshspec.spec.models import HealthTiming, Routing, Service
from meshspec.spec.resolve import effective_health_timing, effective_routing, path_prefix

PEERS = "mesh"
CLIENT_TABLE = "rate_client"
SERVICE_TABLE = "rate_service"
TOOL_TABLE = "rate_tool"
STATE_FILE = "server-state"
INTENTIONS_MAP = "intentions.map"
INBOUND_MAP = "inbound.map"
PIDFILE = "haproxy.pid"
#: HAProxy's own check of each server, a liveness check beside the checker's proof. Every 5 s, not
#: 2 s: a check that does real work (an inference for the embeddings service) cost the idle mesh
#: 0.06 core every 2 s. A killed server costs no request meanwhile (retry-on conn-failure with
#: redispatch), and once a check fails the next comes `fastinter` later.
HEALTH_INTER_MS = 5_000
#: A tunnel's check of a server: as far as the other host's proxy, a TLS handshake (tunnel_block).
TUNNEL_CHECK = f"check inter {HEALTH_INTER_MS}ms"
FASTINTER_MS = 250
MAX_FALL = 2
#: Each proxy's check of every other host's proxy (a TLS handshake with its inbound listener): what
#: finds a host cut off. Every second, two failures of half a second in a row: gone within 3 s at
#: worst (1 + 0.5 + 0.25 + 0.5, and the controller's next read), where the servers' own checks
#: (every 5 s, each waiting out `timeout connect`) took 8.6 s. One handshake a second per other host.
PEER_INTER_MS = 1_000
PEER_TIMEOUT_MS = 500
#: The stats page asks HTTP Basic credentials of this userlist, which `stats_users` renders into a
#: file of its own (the plan's `proxy.stats_users`, 0600, loaded with a second -f): haproxy.cfg
#: stays free of secrets and is rendered from the plan alone.
STATS_USERLIST = "meshspec-stats"
#: The edge samples traces in steps of 1/SAMPLING_SCALE (HAProxy's rand() draws integers).
SAMPLING_SCALE = 10_000
WORKER_USER = "haproxy"  # made by Debian's haproxy package
STATS_USER = "meshspec"


@dataclass(frozen=True)
class ProxyOptions:
    """Knobs the spec has no field for (yet).

    + spare_slots: disabled servers per backend the controller fills at runtime
    + log_target: `stdout`, or a syslog address such as `127.0.0.1:514`
    """

    spare_slots: int = 4
    log_target: str = "stdout"
    session_ttl: str = "1h"


def backend_name(service: str) -> str:
    return f"svc_{service}"


def spare_name(k: int) -> str:
    return f"spare-{k}"


def routed_services(plan: Plan) -> list[tuple[Service, Routing]]:
    """The services the proxy carries: routing enabled, mode http (tcp-mode services are reached directly)."""
    out = []
    for service in plan.spec.services:
        routing = effective_routing(plan.spec, service)
        if routing.enabled and routing.mode == "http" and service.name != plan.spec.proxy.service:
            out.append((service, routing))
    return out


def proxy_instance(plan: Plan) -> Instance:
    name = plan.spec.proxy.service
    if name is None:
        raise ValueError("the spec declares no proxy service (proxy.service is null)")
    return plan.instances_of(name)[0]


def proxy_paths(plan: Plan, proxy: Instance | None = None) -> dict[str, str]:
    """Files a proxy (by default the first) keeps in its instance state dir."""
    proxy = proxy or proxy_instance(plan)
    state = plan.layout.instance_dir(proxy.id)
    return {
        "config": str(state / "haproxy.cfg"),
        "pidfile": str(state / PIDFILE),
        "state_file": str(state / STATE_FILE),
        "certificate": plan.proxy_file(PROXY_CERTIFICATE, proxy),
        "intentions": str(state / INTENTIONS_MAP),
        "inbound": str(state / INBOUND_MAP),
        "consumers": plan.proxy_file(PROXY_CONSUMERS, proxy),
        "ca": plan.proxy_file(PROXY_CA, proxy),
    }


# --- between hosts --------------------------------------------------------------------------------

def peer_name(plan: Plan, instance_id: str) -> str:
    """The TLS server name a proxy asks another host's proxy for to reach one of its instances: the
    instance under the proxy's service name, which only a leaf of the proxy's service carries
    (`*.<proxy>`, common/connect_certs.dns_names). HAProxy checks the answering certificate against it."""
    return f"{instance_id}.{plan.spec.proxy.service}"


def peer_tls(plan: Plan, proxy: Instance, name: str) -> str:
    """A server's options when it is reached through another host's proxy: TLS with this proxy's
    certificate (the other proxy requires it), the other's verified by the mesh CA and by `name`,
    and HAProxy's own checks sent the same way (so they reach the instance, not just the host)."""
    paths = proxy_paths(plan, proxy)
    return f"ssl crt {paths['certificate']} ca-file {paths['ca']} verify required sni str({name}) check-sni {name}"


def server_address(plan: Plan, proxy: Instance, inst: Instance) -> str:
    """Where `proxy` sends an instance's requests: the instance itself on its own host, else the
    inbound listener of its host's proxy, over mTLS; plaintext only where the spec gives the proxy
    no inbound port."""
    inbound = plan.inbound_port(proxy)
    if inst.host == proxy.host or inbound is None:
        return f"{inst.address}:{inst.port}"
    return f"{inst.address}:{inbound} {peer_tls(plan, proxy, peer_name(plan, inst.id))}"


def between_hosts(plan: Plan) -> set[str]:
    """The services whose instances another host's proxy may call: the routed ones, and those some
    host's programs reach through its proxy's tunnels (Plan.tunnelled)."""
    return {s.name for s, _ in routed_services(plan)} | {s for h in plan.hosts for s in plan.tunnelled(h)}


def peer_check_block(plan: Plan, proxy: Instance, other: Instance) -> list[str]:
    """The check of another host's proxy: the controller takes every server of that host out of
    rotation while it fails (runtime/proxy/outliers.on_lost_hosts)."""
    inbound = plan.inbound_port(proxy)
    return [f"backend {peer_backend(other)}", "mode tcp", f"timeout connect {PEER_TIMEOUT_MS}ms",
            f"timeout check {PEER_TIMEOUT_MS}ms",
            f"server {other.id} {other.address}:{inbound} {peer_tls(plan, proxy, peer_name(plan, other.id))} "
            f"check inter {PEER_INTER_MS}ms fastinter {FASTINTER_MS}ms downinter {PEER_INTER_MS}ms rise 2 fall 2"]


def peer_backend(other: Instance) -> str:
    return f"peer_{other.host.label}"


def other_proxies(plan: Plan, proxy: Instance) -> list[Instance]:
    return [p for p in plan.instances_of(proxy.service) if p.host != proxy.host]


def local_instances(plan: Plan, proxy: Instance) -> list[Instance]:
    """The instances on the proxy's host that its inbound listener serves to the other hosts' proxies."""
    served = between_hosts(plan)
    return [i for i in plan.instances if i.host == proxy.host and i.service in served]


def tunnel_name(service: str) -> str:
    return f"tunnel_{service}"


def tunnel_servers(plan: Plan, proxy: Instance, service: str) -> list[tuple[str, str]]:
    """A tunnel's servers as haproxy.cfg names them: each planned instance checked, then unchecked."""
    inbound = plan.inbound_port(proxy)
    servers = []
    for i in plan.instances_of(service):
        server = f"{i.address}:{inbound} {peer_tls(plan, proxy, peer_name(plan, i.id))}"
        servers += [(i.id, f"{server} {TUNNEL_CHECK}"), (f"{i.id}-unchecked", f"{server} backup")]
    return servers


def tunnel_block(plan: Plan, proxy: Instance, service: str) -> list[str]:
    """A service the programs of the proxy's host reach, which runs on other hosts only: this host's
    address at the service's port (Plan.reach) takes their connections, in TCP, to its instances
    through their hosts' proxies, over mTLS. The planned instances, each checked as far as its
    host's proxy (a TLS handshake), and each again as a backup without a check, which HAProxy uses
    while every checked one is down (Envoy's panic routing): a check needs two passes 5 s apart to
    put a server back, so after a cut host's link returned its tunnels refused its programs for up
    to 10 s while the other hosts' proxies, checking it every second, had its instances back in
    rotation (CI: backend-api there answered 38 of 2,296 calls `degraded`, the registry's tunnel
    "disconnected"). A tunnel to a host really gone now waits out `timeout connect` instead. The
    instances the registry lists beyond the plan the controller adds and removes
    (runtime/proxy/reconcile.reconcile_tunnel); the planned ones are their checks' alone, since a
    host's controller reads the registry through its tunnel."""
    lines = [f"listen {tunnel_name(service)}", "mode tcp", f"bind {proxy.address}:{plan.instances_of(service)[0].port}",
             "no log", "option allbackups"]
    return lines + [f"server {name} {options}" for name, options in tunnel_servers(plan, proxy, service)]


def metrics_name(plan: Plan, port: int) -> str:
    """The TLS server name another host's proxy asks for to reach a metrics port of this host (a
    scrape through its egress listener)."""
    return f"port-{port}.{plan.spec.proxy.service}"


def local_metrics_ports(plan: Plan, proxy: Instance) -> list[int]:
    """The ports the instances on the proxy's host export their metrics on."""
    ports = {plan.metrics_port(i) for i in plan.instances if i.host == proxy.host}
    return sorted(p for p in ports if p is not None)


def egress_sections(plan: Plan, proxy: Instance) -> list[tuple[str, list[str]]]:
    """An HTTP proxy for this host's programs alone (on loopback; Prometheus' `proxy_url`): a
    request for this host goes straight there, one for another host of the mesh to that host's
    proxy's inbound listener over mTLS, the port named in the TLS server name (which that listener
    takes for its metrics ports alone); any other destination is refused."""
    port = proxy.ports.get(plan.spec.proxy.egress_port_name)
    if port is None:
        return []
    others = " ".join(o.address for o in other_proxies(plan, proxy))
    paths = proxy_paths(plan, proxy)
    name = f"str(port-),concat(,txn.port,.{plan.spec.proxy.service})"
    return [
        ("frontend egress", [
            f"bind {LOOPBACK}:{port}", "no log",
            "http-request deny deny_status 400 unless { url_ip -m found } { url_port -m found }",
            "http-request set-var(txn.ip) url_ip", "http-request set-var(txn.port) url_port",
            "http-request set-uri %[pathq]",  # absolute-form in, origin-form out
            f"use_backend egress_here if {{ var(txn.ip) -m str {proxy.address} }}",
            "default_backend egress_peers"]),
        ("backend egress_here", ["http-request set-dst var(txn.ip)", "http-request set-dst-port var(txn.port)",
                                 "server here 0.0.0.0:0"]),
        ("backend egress_peers", [
            f"http-request deny deny_status 403 unless {{ var(txn.ip) -m str {others} }}",
            "http-request set-dst var(txn.ip)", f"http-request set-dst-port int({plan.inbound_port(proxy)})",
            f"server peer 0.0.0.0:0 ssl crt {paths['certificate']} ca-file {paths['ca']} verify required sni {name}"]),
    ]


def inbound_lines(plan: Plan, proxy: Instance) -> list[str]:
    """The listener other hosts' proxies call this host's instances on: TLS that requires a client
    certificate of the mesh CA with the proxy's name (no service calls it directly); the server name
    they ask for picks the instance, and the connection goes on to its port on this host (the
    server `0.0.0.0:0` of `mesh_inbound` connects to the destination these rules set). The planned
    instances are named here; an instance the registry lists at this host beyond them (registered
    by hand, or by a real Consul's own) is in the inbound map, which the controller keeps
    (runtime/proxy/reconcile.inbound_entries), as the other hosts' controllers add it to their
    proxies. A name of neither is refused. Plain TCP inside: whatever the instance speaks passes
    unchanged."""
    port = plan.inbound_port(proxy)
    paths = proxy_paths(plan, proxy)
    to = {peer_name(plan, i.id): i.port for i in local_instances(plan, proxy)}
    if proxy.ports.get(plan.spec.proxy.egress_port_name) is not None:
        to |= {metrics_name(plan, p): p for p in local_metrics_ports(plan, proxy)}
    registered = f"ssl_fc_sni,map_str_int({paths['inbound']})"
    planned = f"{{ ssl_fc_sni -m str {' '.join(to)} }} or " if to else ""
    return [
        "mode tcp",
        f"bind {proxy.address}:{port} ssl crt {paths['certificate']} ca-file {paths['ca']} verify required",
        "no log",  # the request log's ring holds HTTP lines alone (common/request_log.py)
        f"tcp-request content reject unless {{ ssl_c_s_dn(CN) -m str {plan.spec.proxy.service} }}",
        f"tcp-request content reject unless {planned}{{ {registered} -m found }}",
        f"tcp-request content set-dst-port {registered} if {{ {registered} -m found }}",
        # after the map's rule: a planned instance's port is the plan's, whatever the map says
        *[f"tcp-request content set-dst-port int({p}) if {{ ssl_fc_sni -m str {name} }}" for name, p in to.items()],
        "default_backend mesh_inbound",
    ]


def edge_lines(plan: Plan, proxy: Instance) -> list[str]:
    """On the edge listener (not TLS), where the spec declares consumers: a request must carry a
    consumer's API key (`X-API-Key`, or as a Bearer token for a client that can send nothing else,
    such as Alertmanager's webhook), looked up by its SHA-256 in the consumers map (the deploy's; no
    key itself is in it), else 401. The key goes no further than the proxy; the service learns the
    consumer as X-Mesh-Consumer, which no client can set itself."""
    lines = ["http-request del-header X-Mesh-Consumer"]
    if not plan.spec.consumers:
        return lines
    consumers = proxy_paths(plan, proxy)["consumers"]
    return [
        f"http-request set-var(txn.consumer) req.hdr(x-api-key),sha2(256),hex,lower,map({consumers}) "
        "unless { ssl_fc }",
        f"http-request set-var(txn.bearer) http_auth_bearer,sha2(256),hex,lower,map({consumers}) "
        "unless { ssl_fc } || { var(txn.consumer) -m found }",
        "http-request set-var(txn.consumer) var(txn.bearer) if { var(txn.bearer) -m found }",
        "http-request deny deny_status 401 content-type text/plain string "
        "\"an API key of a consumer of the mesh is required (X-API-Key)\" "
        "unless { ssl_fc } || { var(txn.consumer) -m found }",
        "http-request del-header X-API-Key",
        "http-request del-header Authorization if { var(txn.bearer) -m found }",
        *lines,
        "http-request set-header X-Mesh-Consumer %[var(txn.consumer)] unless { ssl_fc }",
    ]


def intention_lines(plan: Plan, proxy: Instance) -> list[str]:
    """On the mTLS listener, the registry's intentions decide: the map the controller keeps
    (`<caller>/<service>` -> allow|deny, every routed service for every caller an intention names,
    and `*/<service>` for any other caller) answers for the caller's certificate and the service the
    route chose. Anything but allow, a caller the map misses included, is denied with 403 (counted
    in the frontend's denied requests) and a one-line reason."""
    if plan.spec.proxy.mtls_port_name not in proxy.ports:
        return []
    intentions = proxy_paths(plan, proxy)["intentions"]
    return [
        f"http-request set-var(txn.intention) var(txn.who),concat(/,txn.svc),map({intentions}) if {{ ssl_fc }}",
        f"http-request set-var(txn.intention) str(*/),concat(,txn.svc),map({intentions}) "
        "if { ssl_fc } !{ var(txn.intention) -m found }",
        "http-request deny deny_status 403 content-type text/plain lf-string "
        "\"intention denies %[var(txn.who)] -> %[var(txn.svc)]\" if { ssl_fc } !{ var(txn.intention) -m str allow }",
    ]


def consumer_intention_lines(plan: Plan, routed: list[tuple[Service, Routing]]) -> list[str]:
    """At the edge, the intentions that name a consumer as their source: a consumer refused a route
    gets 403 and a one-line reason."""
    denied = consumer_denials(plan, [s.name for s, _ in routed])
    return [f"http-request deny deny_status 403 content-type text/plain lf-string \"intention denies {consumer} -> "
            f"%[var(txn.svc)]\" if !{{ ssl_fc }} {{ var(txn.consumer) -m str {consumer} }} "
            f"{{ var(txn.svc) -m str {' '.join(services)} }}" for consumer, services in denied.items()]


def mtls_lines(plan: Plan, proxy: Instance) -> list[str]:
    """The service-facing listener, where the proxy has one: TLS that requires a client certificate
    issued by the mesh CA, in the same frontend as the edge listener (one set of routes). The caller's
    service (its certificate's CN, which the CA sets to the service its URI names) reaches the
    service as X-Mesh-Caller, which no client can set itself."""
    port = proxy.ports.get(plan.spec.proxy.mtls_port_name)
    lines = ["http-request del-header X-Mesh-Caller"]
    if port is None:
        return lines
    paths = proxy_paths(plan, proxy)
    return [f"bind {proxy.address}:{port} ssl crt {paths['certificate']} ca-file {paths['ca']} verify required",
            *lines, "http-request set-header X-Mesh-Caller %[ssl_c_s_dn(CN)] if { ssl_fc }"]


MCP_BODY_WAIT = "2s"  # how long the proxy waits for a JSON-RPC body it must read before it decides


def mcp_refusal(status: int, code: int, message: str) -> str:
    """A refusal on an MCP route as a JSON-RPC error (id null: the client pairs it with its request),
    which MCP clients surface with its message where a text body would reach the user as a bare status."""
    return (f"http-request deny deny_status {status} content-type application/json lf-string "
            f"'{{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{{\"code\":{code},\"message\":\"{message}\"}}}}'")


def who_lines() -> list[str]:
    """Who calls, decided once for intentions and rate limits: the service its certificate names on
    the mTLS listener, the consumer its key names at the edge, else the client's address."""
    return ["http-request set-var(txn.who) ssl_c_s_dn(CN) if { ssl_fc }",
            "http-request set-var(txn.who) var(txn.consumer) if !{ ssl_fc } { var(txn.consumer) -m found }",
            "http-request set-var(txn.who) src unless { var(txn.who) -m found }"]


def mcp_read_services(plan: Plan, routed: list[tuple[Service, Routing]]) -> list[str]:
    """The MCP servers whose requests the proxy reads: those tool intentions or tool rate limits name."""
    named = {p.service for p in tool_policies(plan)} | {s.name for s, r in routed if r.tool_rate_limits}
    return sorted(named)


def mcp_read_lines(plan: Plan, routed: list[tuple[Service, Routing]]) -> list[str]:
    """For a POST to an MCP server `mcp_read_services` names, the proxy waits for the body and reads the
    JSON-RPC `method` and, for tools/call, `params.name` (json_query) into txn.mcp_method/txn.mcp_tool,
    which tool intentions and tool rate limits decide on.

    The body decides, not the client's Mcp-Method/Mcp-Name headers: a header that disagrees with it is
    refused (400), and the server gets the headers the proxy read, so a server that checks them against
    the body as MCP asks (meshspec's task runner does) refuses a body the two JSON parsers read apart
    (duplicate keys). A message whose method the proxy cannot read passes only as a response (an `id`,
    no `method` text and no escape anywhere): a batch, a body over one buffer or an escaped key name
    would hide the tool."""
    services = mcp_read_services(plan, routed)
    if not services:
        return []
    on = f"{{ var(txn.svc) -m str {' '.join(services)} }}"
    post = f"{on} METH_POST"
    tools_call = f"{on} {{ var(txn.mcp_method) -m str tools/call }}"
    return [
        f"http-request wait-for-body time {MCP_BODY_WAIT} if {post}",
        f"http-request set-var(txn.mcp_method) req.body,json_query('$.method') if {post}",
        f"http-request set-var(txn.mcp_tool) req.body,json_query('$.params.name') if {tools_call}",
        mcp_refusal(400, INVALID_REQUEST, "the proxy could not read the method of this MCP message: send one JSON-RPC "
                    "message per request, within one buffer, with unescaped keys")
        + f" if {post} !{{ var(txn.mcp_method) -m found }} !{{ req.body,json_query('$.id') -m found }} || "
        f"{post} !{{ var(txn.mcp_method) -m found }} {{ req.body -m sub method \\\\u }}",
        mcp_refusal(400, HEADER_MISMATCH, "the Mcp-Method header does not match the method of the JSON-RPC body")
        + f" if {post} {{ req.hdr(mcp-method) -m found }} !{{ req.hdr(mcp-method),strcmp(txn.mcp_method) eq 0 }}",
        mcp_refusal(400, HEADER_MISMATCH, "the Mcp-Name header does not match the tool name of the tools/call body")
        + f" if {tools_call} {{ req.hdr(mcp-name) -m found }} !{{ req.hdr(mcp-name),strcmp(txn.mcp_tool) eq 0 }}",
        f"http-request del-header Mcp-Method if {on}",
        f"http-request del-header Mcp-Name if {on}",
        f"http-request set-header Mcp-Method %[var(txn.mcp_method)] if {on} {{ var(txn.mcp_method) -m found }}",
        f"http-request set-header Mcp-Name %[var(txn.mcp_tool)] if {tools_call}",
    ]


def tool_intention_lines(plan: Plan) -> list[str]:
    """The spec's tool intentions (render.intentions.tool_policies), after the service-level ones: a
    caller the tool's intentions do not allow gets 403 and a one-line reason."""
    lines = []
    for p in tool_policies(plan):
        this = f"{{ var(txn.svc) -m str {p.service} }} {{ var(txn.mcp_tool) -m str {p.tool} }}"
        deny = mcp_refusal(403, FORBIDDEN, f"tool intention denies %[var(txn.who)] -> {p.service}.{p.tool}") + f" if {this}"
        if p.deny:
            lines.append(f"{deny} {{ var(txn.who) -m str {' '.join(p.deny)} }}")
        if p.others == "deny":
            lines.append(f"{deny} !{{ var(txn.who) -m str {' '.join(p.allow)} }}" if p.allow else deny)
    return lines


# --- policies -------------------------------------------------------------------------------------

def balance_lines(routing: Routing) -> list[str]:
    lb = routing.lb
    if lb.policy == "least_conn":
        return ["balance leastconn"]
    if lb.policy == "hash":
        key = lb.hash_on
        if key is None or key.source:
            algo = "balance source"
        elif key.header is not None:
            algo = f"balance hdr({key.header})"
        else:
            algo = f"balance hash req.cook({key.cookie})"
        return [algo, "hash-type consistent"]
    return ["balance roundrobin"]  # round_robin, and weighted (the weights are on the servers)


def weight_of(routing: Routing, replica: int) -> int:
    weights = routing.lb.weights
    if routing.lb.policy == "weighted" and weights and replica < len(weights):
        return weights[replica]
    return 1


def check_lines(plan: Plan, service: Service) -> list[str]:
    """HAProxy's own check of a server, every 5 s: the first page the service's HTTP probe reads (a
    GET step before its own request, else its own request) answering 2xx; other probes get a TCP
    connect check. A fast liveness check only: the whole proof (the bodies' content, a round
    trip's object, who answered) is the checker's, and reaches HAProxy through Consul (a critical
    check puts the server in maint). So HAProxy reads the frontend's page, not its data call, and
    stores nothing. HAProxy could expect a string too, but reads only its 16 kB check buffer, and
    an exporter's proof (`pg_up 1`) sits 86 kB into its metrics. The path is one per backend: its
    placeholders are those of the service's first instance."""
    if service.health.http is not None:
        first = service.health.http.first_page
        uri = plan.render_once(service.name, first.path, **{nonce.NAME: "haproxy"})
        return ["option httpchk", f"http-check send meth {first.method} uri {uri}", "http-check expect status 200-299"]
    return []  # tcp connect check


def server_options(routing: Routing, timing: HealthTiming) -> str:
    """Per-server options (also given to `add server`, which does not inherit default-server).

    rise/fall follow the spec's SuccessBeforePassing/FailuresBeforeCritical, the damping the checker
    applies before Consul sees a status, so one slow check on a busy host drops no server. fall is
    at most MAX_FALL: after one failed check HAProxy checks every `fastinter`, which the breaker
    sets to its cooldown, so each further fall would keep a dead server in rotation a whole
    cooldown longer; two results in a row already ride out one slow check."""
    fall = min(max(1, timing.failures_before_critical), MAX_FALL)
    rise_fall = f"rise {max(1, timing.success_before_passing)} fall {fall}"
    breaker = routing.circuit_breaker
    if not breaker.enabled:
        return f"check inter {HEALTH_INTER_MS}ms fastinter {FASTINTER_MS}ms {rise_fall}"
    # `on-error mark-down` forces fastinter, so fastinter (and downinter) are the cooldown: the breaker
    # stays open until the first check after it. The breaker (mark-down) opens at once on `errors`
    # failed responses, whatever fall says.
    opts = [f"check inter {HEALTH_INTER_MS}ms fastinter {breaker.cooldown}ms downinter {breaker.cooldown}ms",
            rise_fall, f"observe layer7 error-limit {breaker.errors} on-error mark-down"]
    return " ".join(opts)


def path_timeout_lines(routing: Routing) -> list[str]:
    """The spec's per-path request timeouts; HAProxy applies every matching rule in order, so the
    shortest prefix comes first and the longest match is the one left standing. The frontend has
    already rewritten the path to the service's own."""
    ordered = sorted(routing.timeouts.paths.items(), key=lambda kv: (len(kv[0]), kv[0]))
    return [f"http-request set-timeout server {ms}ms if {{ path_beg {prefix} }}" for prefix, ms in ordered]


def retry_lines(routing: Routing) -> list[str]:
    retries = routing.retries
    if retries.attempts == 0:
        return ["retries 0", "retry-on none"]
    on = " ".join(str(r) for r in retries.retry_on) or "conn-failure"
    # A request the server may have acted on is never sent again, since it is not idempotent
    # (measured: an empty POST to a hung server reached three). Only a connection that failed,
    # where nothing was sent, is still retried (HAProxy's disable-l7-retry keeps conn-failure).
    return [f"retries {retries.attempts}", f"retry-on {on}", "option redispatch 1",
            "http-request disable-l7-retry if { method POST PATCH }"]


def affinity_lines(routing: Routing, ttl: str) -> list[str]:
    if routing.affinity == "mcp_session":
        return [
            f"stick-table type string len 64 size 100k expire {ttl} peers {PEERS}",
            "stick store-response res.hdr(mcp-session-id)",
            "stick match req.hdr(mcp-session-id)",
        ]
    if routing.affinity == "source":
        return [f"stick-table type ip size 100k expire {ttl} peers {PEERS}", "stick on src"]
    return []


def assign_ids(instance_ids: list[str], taken: set[int]) -> dict[str, int]:
    """server_id per instance, bumped past collisions (deterministic for a given order)."""
    ids: dict[str, int] = {}
    for iid in instance_ids:
        n = server_id(iid)
        while n in taken:
            n += 1
        taken.add(n)
        ids[iid] = n
    return ids


def backend_block(plan: Plan, proxy: Instance, service: Service, routing: Routing, options: ProxyOptions) -> list[str]:
    opts = server_options(routing, effective_health_timing(plan.spec, service))
    lines = [f"backend {backend_name(service.name)}", "mode http"]
    lines += balance_lines(routing)
    # Active checks get the spec's own health timeout: a service whose check does real work
    # (an embedding, a handshake) must not be cut off sooner by HAProxy than by Consul.
    check_timeout = effective_health_timing(plan.spec, service).timeout
    lines += [f"timeout connect {routing.timeouts.connect}ms", f"timeout server {routing.timeouts.request}ms",
              f"timeout queue {routing.timeouts.connect}ms", f"timeout check {check_timeout}ms"]
    lines += path_timeout_lines(routing)
    lines += retry_lines(routing)
    lines += check_lines(plan, service)
    lines += affinity_lines(routing, options.session_ttl)
    lines += ["option forwardfor", "http-request set-header X-Request-ID %[unique-id]"]
    instances = plan.instances_of(service.name)
    ids = assign_ids([i.id for i in instances], set(range(1, options.spare_slots + 1)))
    for inst in instances:
        lines.append(f"server {inst.id} {server_address(plan, proxy, inst)} id {ids[inst.id]} "
                     f"weight {weight_of(routing, inst.replica)} {opts}")
    for k in range(1, options.spare_slots + 1):
        lines.append(f"server {spare_name(k)} 127.0.0.1:1 id {k} disabled weight 1 {opts}")
    return lines


# --- frontend -------------------------------------------------------------------------------------

def _regex_literal(text: str) -> str:
    """A path prefix as an HAProxy regex: '.' as a class (HAProxy args make backslashes awkward)."""
    return re.sub(r"([.~])", r"[\1]", text)


def route_lines(plan: Plan, routed: list[tuple[Service, Routing]]) -> tuple[list[str], list[str]]:
    """Decide the route once on the original path (var txn.svc + txn.via), then rewrite, then pick the backend."""
    domain = plan.spec.mesh.domain
    by_prefix = sorted(routed, key=lambda sr: -len(path_prefix(*sr)))
    decide, rewrite, use = [], [], []
    unset = "!{ var(txn.svc) -m found }"
    for service, routing in by_prefix:
        prefix = path_prefix(service, routing).rstrip("/") or "/"
        n = service.name
        decide.append(f"http-request set-var(txn.via) str(prefix) if {unset} {{ path {prefix} }} || "
                      f"{unset} {{ path_beg {prefix}/ }}")
        decide.append(f"http-request set-var(txn.svc) str({n}) if {{ var(txn.via) -m str prefix }} {unset}")
        rewrite.append(f"http-request set-path %[path,regsub(^{_regex_literal(prefix)}/?,/)] "
                       f"if {{ var(txn.svc) -m str {n} }} {{ var(txn.via) -m str prefix }}")
    for service, _ in routed:
        n = service.name
        decide.append(f"http-request set-var(txn.via) str(mcp) if {unset} {{ path /mcp/{n} }}")
        decide.append(f"http-request set-var(txn.svc) str({n}) if {{ var(txn.via) -m str mcp }} {unset}")
        mcp_path = service.health.mcp.path if service.health.mcp else "/mcp"
        rewrite.append(f"http-request set-path {mcp_path} if {{ var(txn.svc) -m str {n} }} {{ var(txn.via) -m str mcp }}")
    for service, _ in routed:
        n = service.name
        decide.append(f"http-request set-var(txn.via) str(host) if {unset} "
                      f"{{ req.hdr(host),field(1,:),lower -m str {n}.{domain} }}")
        decide.append(f"http-request set-var(txn.svc) str({n}) if {{ var(txn.via) -m str host }} {unset}")
        use.append(f"use_backend {backend_name(n)} if {{ var(txn.svc) -m str {n} }}")
    return decide + rewrite, use


def rate_lines(plan: Plan, routed: list[tuple[Service, Routing]]) -> list[str]:
    """The spec's rate limits, each a stick counter over proxy.rate_limits.window: sc0 per caller
    (txn.who; a consumer's own limit, else rate_limits.client), sc1 per service (routing.rate_limit),
    sc2 per MCP tool of a service (routing.tool_rate_limits)."""
    window = plan.spec.proxy.rate_limits.window / 1000

    def refuse(what: str, counter: int, rate: int, *when: str) -> str:
        over = f"{{ sc_http_req_rate({counter}) gt {math.ceil(rate * window)} }}"
        return (f"http-request return status 429 content-type text/plain string \"rate limited ({what})\" "
                f"hdr Retry-After {math.ceil(window)} if {' '.join((*when, over))}")

    lines = []
    own = {c.name: c.rate_limit for c in plan.spec.consumers if c.rate_limit is not None}
    client = plan.spec.proxy.rate_limits.client
    if client or any(own.values()):
        lines.append(f"http-request track-sc0 var(txn.who) table {CLIENT_TABLE}")
        lines += [refuse(f"consumer {name}", 0, rate, "!{ ssl_fc }", f"{{ var(txn.consumer) -m str {name} }}")
                  for name, rate in sorted(own.items()) if rate]
        if client:
            lines.append(refuse("client", 0, client, *([f"!{{ var(txn.consumer) -m str {' '.join(sorted(own))} }}"]
                                                       if own else [])))
    rated = [(s.name, r.rate_limit) for s, r in routed if r.rate_limit]
    if rated:
        lines.append(f"http-request track-sc1 var(txn.svc) table {SERVICE_TABLE} if {{ var(txn.svc) -m found }}")
        lines += [refuse("service", 1, rate, f"{{ var(txn.svc) -m str {name} }}") for name, rate in rated]
    tools = [(s.name, tool, rate) for s, r in routed for tool, rate in sorted(r.tool_rate_limits.items()) if rate]
    if tools:
        lines.append(f"http-request track-sc2 var(txn.svc),concat(/,txn.mcp_tool) table {TOOL_TABLE} "
                     "if { var(txn.mcp_tool) -m found }")
        lines += [refuse(f"tool {tool}", 2, rate, f"{{ var(txn.svc) -m str {name} }}", f"{{ var(txn.mcp_tool) -m str {tool} }}")
                  for name, tool, rate in tools]
    return lines


def between_sections(plan: Plan, proxy: Instance) -> list[tuple[str, list[str]]]:
    """What a proxy with an inbound port adds for the other hosts: its inbound listener, a tunnel
    for each service its host's programs reach on other hosts only, its checks of the other hosts'
    proxies, and its egress listener (where the spec gives it one)."""
    if plan.inbound_port(proxy) is None:
        return []
    blocks = [tunnel_block(plan, proxy, s) for s in plan.tunnelled(proxy.host)]
    blocks += [peer_check_block(plan, proxy, other) for other in other_proxies(plan, proxy)]
    return [("frontend inbound", inbound_lines(plan, proxy)),
            ("backend mesh_inbound", ["mode tcp", "server instance 0.0.0.0:0"]),
            *[(block[0], block[1:]) for block in blocks], *egress_sections(plan, proxy)]


def between_lines(plan: Plan, proxy: Instance) -> list[str]:
    """The lines of between_sections, for the shape's digest: a change of any is a reload."""
    return [line for head, body in between_sections(plan, proxy) for line in (head, *body)]


def frontend_lines(plan: Plan, proxy: Instance) -> list[str]:
    """The body of the frontend every request enters: listeners, who calls, routes, limits, intentions."""
    routed = routed_services(plan)
    routing_rules, use_rules = route_lines(plan, routed)
    return [
        f"bind {proxy.address}:{proxy.port}",
        *mtls_lines(plan, proxy),
        *edge_lines(plan, proxy),
        *who_lines(),
        "monitor-uri /healthz",
        # W3C trace context: the request id doubles as the trace id when the client sent none, and
        # the spec's share of those traces is marked sampled (every service downstream follows it).
        "unique-id-format %[uuid(4),regsub(-,,g)]",
        f"http-request set-var(txn.trace_flags) str(01) if {{ rand({SAMPLING_SCALE}) lt "
        f"{round(plan.spec.tracing.sampling * SAMPLING_SCALE)} }}",
        "http-request set-var(txn.trace_flags) str(00) unless { var(txn.trace_flags) -m found }",
        "http-request set-header traceparent 00-%[unique-id]-%[uuid(4),regsub(-,,g),bytes(16,16)]-%[var(txn.trace_flags)] "
        "unless { req.hdr(traceparent) -m found }",
        "http-request capture req.hdr(traceparent) len 64",
        # after-response: HAProxy's own answers too (a 504, a 429), the ones a caller asks about most
        "http-after-response set-header X-Request-ID %[unique-id]",
        f"log-format '{request_log.FORMAT}'",
        *routing_rules,
        "http-request return status 404 content-type text/plain string \"no such service\" "
        "unless { var(txn.svc) -m found }",
        *mcp_read_lines(plan, routed),
        *rate_lines(plan, routed),
        *intention_lines(plan, proxy),
        *consumer_intention_lines(plan, routed),
        *tool_intention_lines(plan),
        *use_rules,
    ]


# --- the whole file -------------------------------------------------------------------------------

def config_shape(plan: Plan, options: ProxyOptions = ProxyOptions(), proxy: Instance | None = None) -> dict:
    """What needs a reload to change (listeners, backends and their policies) and what the controller
    may change at runtime (`runtime_only`). `hash` covers the shape only, never membership. `proxy`:
    the proxy instance it is for (by default the first)."""
    proxy = proxy or proxy_instance(plan)
    paths = proxy_paths(plan, proxy)
    backends = {}
    for service, routing in routed_services(plan):
        instances = plan.instances_of(service.name)
        backends[backend_name(service.name)] = {
            "service": service.name,
            "routing": routing.model_dump(mode="json"),
            "check": check_lines(plan, service),
            "server_options": server_options(routing, effective_health_timing(plan.spec, service)),
            "spares": [spare_name(k) for k in range(1, options.spare_slots + 1)],
            "planned": [i.id for i in instances],
            # weights are policy (shape), applied to every server including runtime-added ones
            "replica_weights": [weight_of(routing, r) for r in range(max(service.replicas, 16))]
            if routing.lb.policy == "weighted" else [],
        }
    shape = {
        "version": 1,
        "listen": {"main": f"{proxy.address}:{proxy.port}",
                   "mtls": proxy.ports.get(plan.spec.proxy.mtls_port_name),
                   "stats": f"{proxy.address}:{proxy.ports.get(plan.spec.proxy.stats_port_name)}",
                   "runtime": plan.proxy_runtime_of(proxy)},
        "domain": plan.spec.mesh.domain,
        "options": {"spare_slots": options.spare_slots, "log_target": options.log_target,
                    "session_ttl": options.session_ttl},
        "rate_limits": plan.spec.proxy.rate_limits.model_dump(mode="json"),
        "backends": backends,
        # The tunnels (listen sections, TCP) to services on other hosts only: the controller adds
        # the instances the registry lists beyond the `planned` servers (names as haproxy.cfg has them).
        "tunnels": {tunnel_name(s): {"service": s, "planned": [name for name, _ in tunnel_servers(plan, proxy, s)],
                                     "server_options": TUNNEL_CHECK}
                    for s in (plan.tunnelled(proxy.host) if plan.inbound_port(proxy) is not None else [])},
        "paths": paths,
        # Where instances of other hosts are reached: through their proxy's inbound listener, over
        # mTLS (None: no inbound port; every instance directly). The controller's `add server`
        # gives a server `options` with the instance's `name` when its address is not `address`.
        "peers": ({"address": proxy.address, "port": plan.inbound_port(proxy),
                   "options": peer_tls(plan, proxy, "{name}"), "name": peer_name(plan, "{id}"),
                   # this host's instances beyond the plan, which its inbound listener serves
                   "map": paths["inbound"],
                   # the check of each other host's proxy -> that host's address
                   "hosts": {peer_backend(o): o.address for o in other_proxies(plan, proxy)}}
                  if plan.inbound_port(proxy) is not None else None),
        # The certificate of the mTLS listener, which the controller rotates (None: no such listener).
        "certificate": ({"service": proxy.service, "path": paths["certificate"]}
                        if plan.spec.proxy.mtls_port_name in proxy.ports else None),
        "consumers": [c.name for c in plan.spec.consumers],
        # every rule of the frontend (none names an instance), and what the proxy has for the other
        # hosts (planned instances by name): a change of any is a reload
        "frontend": digest_text("\n".join(frontend_lines(plan, proxy) + between_lines(plan, proxy))),
        # The intentions map the controller keeps (None: no mTLS listener, no caller identity).
        "intentions": paths["intentions"] if plan.spec.proxy.mtls_port_name in proxy.ports else None,
        "needs_reload": ["listeners", "backends", "policies (balance, weights, timeouts, retries, checks, "
                         "breaker, affinity)", "rate limits", "tool intentions", "consumers", "logging"],
        "runtime_only": ["server membership (spare slots, add/del server)", "server addresses and ports",
                         "admin state (ready/drain/maint)", "health forced up on a Consul pass"],
    }
    shape["hash"] = digest(shape)
    return shape


def stats_users(password: str) -> str:
    """The stats page's userlist: the text of `proxy.stats_users` (the deploy derives the password)."""
    return (f"# The credentials of the stats page of haproxy.cfg, written by meshspec's deploy: do not edit.\n"
            f"userlist {STATS_USERLIST}\n    user {STATS_USER} insecure-password {password}\n")


def render_haproxy(plan: Plan, options: ProxyOptions = ProxyOptions(), proxy: Instance | None = None) -> str:
    """The whole haproxy.cfg of a proxy instance of the plan (by default the first)."""
    proxy = proxy or proxy_instance(plan)
    stats_port = proxy.ports.get(plan.spec.proxy.stats_port_name)
    if stats_port is None:
        raise ValueError(f"{proxy.service} needs ports.{plan.spec.proxy.stats_port_name}")
    runtime = plan.proxy_runtime_of(proxy)
    # mode 600: only its owner may open the socket, the controller's user (HAProxy's master binds it as root)
    owner = f" user {plan.proxy_controller_user}" if plan.proxy_controller_user else ""
    runtime_bind = f"{runtime} mode 600{owner}" if runtime.startswith("/") else f"ipv4@{runtime}"
    paths = proxy_paths(plan, proxy)
    routed = routed_services(plan)
    window = plan.spec.proxy.rate_limits.window  # ms
    shape = config_shape(plan, options, proxy)
    log = "log stdout format raw local0 info" if options.log_target == "stdout" else \
        f"log {options.log_target} local0 info"
    # The peers listener only serves the reload hand-over (old -> new process) on this host: an
    # abstract unix socket named after the state dir (no port, no path-length limit), unless the
    # spec gives the proxy a `peers` port.
    peer_bind = (f"bind {proxy.address}:{proxy.ports['peers']}" if "peers" in proxy.ports
                 else f"bind abns@meshspec-peers-{digest_text(paths['config'], 12)}")

    sections: list[tuple[str, list[str]]] = [
        ("global", [
            "master-worker",
            # The workers, which parse every request, drop to Debian's haproxy user; the master
            # stays root: it binds the sockets and hands them to the controller's user, and
            # re-executes itself on reload.
            f"user {WORKER_USER}",
            f"group {WORKER_USER}",
            f"pidfile {paths['pidfile']}",
            f"stats socket {runtime_bind} level admin expose-fd listeners",
            "stats timeout 2m",
            f"server-state-file {paths['state_file']}",
            f"localpeer {proxy.id}",
            log,
            # every request's line, also kept for the controller, which counts each answer's duration
            # per service (common/request_log.py)
            f"log ring@{request_log.RING} local0 info",
            "hard-stop-after 60s",
        ]),
        ("defaults", [
            "mode http",
            "log global",
            "option dontlognull",
            "load-server-state-from-file global",
            "timeout connect 2s",
            "timeout client 60s",
            "timeout server 60s",
            "timeout http-request 10s",
            "timeout http-keep-alive 10s",
            "timeout tunnel 1h",
            "default-server init-addr last,libc,none",
        ]),
        (f"peers {PEERS}", [peer_bind, f"server {proxy.id}"]),
        # 4 MB: ~10,000 lines, half a second at 20,000 requests/s (bench/request_log.py), minutes at an
        # idle mesh's rate, should the controller fall behind (HAProxy then drops new lines for it and
        # says how many; it never blocks a request)
        (f"ring {request_log.RING}", ["format raw", "maxlen 4096", f"size {4 * 1024 * 1024}"]),
        *[(f"backend {table}", [f"stick-table type string len {length} size {size} expire {window * 3}ms "
                                 f"store http_req_rate({window}ms) peers {PEERS}"])
          for table, length, size in ((CLIENT_TABLE, 64, "100k"), (SERVICE_TABLE, 64, "1k"), (TOOL_TABLE, 200, "10k"))],
        ("frontend mesh", frontend_lines(plan, proxy)),
        ("frontend stats", [
            f"bind {proxy.address}:{stats_port}",
            "http-request use-service prometheus-exporter if { path /metrics }",
            "monitor-uri /healthz",
            "stats enable",
            "stats uri /stats",
            f'stats http-request auth realm "meshspec stats" unless {{ http_auth({STATS_USERLIST}) }}',
            "stats refresh 5s",
            "stats show-legends",
            "no log",
        ]),
    ]
    sections += between_sections(plan, proxy)
    sections += [(block[0], block[1:]) for block in
                 (backend_block(plan, proxy, s, r, options) for s, r in routed)]
    out = [f"# haproxy.cfg of {proxy.id}, rendered by meshspec from the plan: do not edit.",
           "# Backends and policies change by reload; membership changes at runtime (mesh-controller).",
           shape_line(shape), ""]
    for head, body in sections:
        out.append(head)
        out += [f"    {line}" for line in body]
        out.append("")
    return "\n".join(out)
