"""Steps about the data plane: routing, load balancing and resilience through the mesh proxy."""

from __future__ import annotations

import datetime as dt
import ssl
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pytest_bdd import parsers, then, when

from meshspec.common.connect_certs import cert_pem, key_pem, leaf_certificate, service_uri
from meshspec.common.consul_token import read_token
from meshspec.render.haproxy import balance_lines
from meshspec.render.mesh_ca import ca_certificate, ca_key
from meshspec.spec.resolve import effective_routing
from meshspec.verify.run import not_routed
from tests.bdd.mesh_target import wait_for


def get(world, path: str) -> httpx.Response | str:
    try:
        return httpx.get(world.target.proxy_url + path, headers=world.target.edge_headers, trust_env=False, timeout=10)
    except httpx.HTTPError as err:
        return f"{type(err).__name__}: {err}"


# --- routing -----------------------------------------------------------------------------------


@then(parsers.parse('"{service}" is reachable through the proxy'))
def _(world, service):
    assert (c := world.target.checks(service=service, check="routable")[0]).status == "passed", c.reason


@then(parsers.parse('"{service}" is not routed through the proxy'))
def _(world, service):
    assert not_routed(world.target.mesh.plan, service), f"the spec routes {service}"  # so verify checks no route
    assert isinstance(r := get(world, f"/svc/{service}/"), httpx.Response) and r.status_code == 404, r


@when(parsers.parse('I request "{path}" through the proxy'))
def _(world, path):
    world.last = get(world, path)


@when(parsers.parse('I request the health path of "{service}" through the proxy'))
def _(world, service):
    world.last = get(world, world.target.routed_path(service))


@then(parsers.parse("the proxy answers HTTP {status:d}"))
def _(world, status):
    assert isinstance(world.last, httpx.Response) and world.last.status_code == status, world.last


@then(parsers.parse('the response carries the header "{header}"'))
def _(world, header):
    assert world.last.headers.get(header), dict(world.last.headers)


@then("the proxy runs the configuration the plan renders")
def _(world):
    status = world.target.controller_status()
    assert status.get("shape") == world.target.planned_shape["hash"], status


@then("the controller sees HAProxy and Consul")
def _(world):
    assert (s := world.target.controller_status()).get("haproxy") and s.get("consul"), s


# --- load balancing ----------------------------------------------------------------------------


@then(parsers.parse('the proxy has every instance of "{service}" up and ready within {seconds:d} seconds'))
def _(world, service, seconds):
    wait_for(lambda: not not_ready(world, service), seconds, interval=0.2)
    assert not (bad := not_ready(world, service)), bad


@then(parsers.parse('the proxy has every instance of "{service}" up and ready'))
def _(world, service):
    assert not (bad := not_ready(world, service)), bad


def not_ready(world, service) -> list[str]:
    servers = {s.name: s for s in world.target.proxy_servers(service)}
    bad = [f"{i.id}: {'absent' if i.id not in servers else f'op {servers[i.id].op_state} admin {servers[i.id].admin}'}"
           for i in world.target.instances_of(service) if i.id not in servers or not servers[i.id].is_up
           or servers[i.id].admin != "ready"]
    return bad


@then(parsers.parse('the proxy balances "{service}" with the "{policy}" policy of the spec'))
def _(world, service, policy):
    routing = effective_routing(world.target.plan.spec, world.target.plan.service(service))
    assert routing.lb.policy == policy, f"the spec balances {service} with {routing.lb.policy}, not {policy}"
    assert_balanced(service, routing, world.target.proxy_stats(service)["BACKEND"]["algo"])


def assert_balanced(service: str, routing, running: str) -> None:
    """What the running HAProxy does (`algo` of its stats) against the balance the spec's policy renders to."""
    wanted = balance_lines(routing)[0].split()[1].split("(")[0]
    assert running == wanted, f"HAProxy balances {service} with {running!r}; the spec's {routing.lb.policy} is {wanted!r}"


@when(parsers.parse('I send {n:d} requests to "{service}" through the proxy'))
@then(parsers.parse('I send {n:d} requests to "{service}" through the proxy'))
@when(parsers.parse('I send {n:d} requests to "{service}" through the proxy over {seconds:d} s'))
def _(world, n, service, seconds=0):
    """All at once (4 at a time), or the i-th not before i/n of `seconds` (a rate over several of
    Prometheus' scrapes)."""
    before = world.target.served(service)
    start = time.monotonic()

    def one(i: int):
        time.sleep(max(0.0, start + seconds * i / n - time.monotonic()))
        return get(world, world.target.routed_path(service))

    with ThreadPoolExecutor(max_workers=4) as pool:
        world.last = list(pool.map(one, range(n)))
    after = world.target.served(service)
    world.counters = {name: after.get(name, 0) - before.get(name, 0) for name in after}


@then("every request succeeded")
def _(world):
    bad = [r if isinstance(r, str) else f"HTTP {r.status_code}" for r in world.last
           if isinstance(r, str) or not 200 <= r.status_code < 300]
    assert not bad, f"{len(bad)} of {len(world.last)} failed: {bad[:5]}"


@then(parsers.parse('each instance of "{service}" served between {low:d} and {high:d} of them'))
def _(world, service, low, high):
    served = {i.id: world.counters.get(i.id, 0) for i in world.target.instances_of(service)}
    assert all(low <= n <= high for n in served.values()), served


@then(parsers.parse('"{instance}" served none of them'))
def _(world, instance):
    assert world.counters.get(instance, 0) == 0, world.counters


@then(parsers.parse('"{instance}" leaves the proxy rotation within {seconds:d} seconds'))
def _(world, instance, seconds):
    service = world.target.instance(instance).service
    server = lambda: next(s for s in world.target.proxy_servers(service) if s.name == instance)  # noqa: E731
    wait_for(lambda: not server().is_up or server().admin != "ready", seconds, interval=0.2)
    assert not server().is_up or server().admin != "ready", server()


@then(parsers.parse('"{instance}" is back in the proxy rotation within {seconds:d} seconds'))
def _(world, instance, seconds):
    service = world.target.instance(instance).service
    server = lambda: next(s for s in world.target.proxy_servers(service) if s.name == instance)  # noqa: E731
    wait_for(lambda: server().in_rotation, seconds, interval=0.2)
    assert server().in_rotation, server()


# --- mesh identity: the mTLS listener ------------------------------------------------------------


def _mtls_get(world, path: str, leaf: tuple[str, str] | None, scheme: str = "https") -> httpx.Response | str:
    """GET through the proxy's mTLS listener, trusting the registry's roots alone, presenting `leaf`
    (certificate and key PEM) or nothing; the answer, or the error as text."""
    proxy = world.target.plan.instances_of(world.target.plan.spec.proxy.service)[0]
    port = proxy.ports[world.target.plan.spec.proxy.mtls_port_name]
    roots = world.target.consul().agent.connect.ca.roots()
    context = ssl.create_default_context(cadata="".join(r["RootCert"] for r in roots["Roots"]))
    context.check_hostname = False  # the proxy is known by its SPIFFE URI, not a host name
    with tempfile.TemporaryDirectory() as keys:
        if leaf:
            Path(keys, "leaf.crt").write_text(leaf[0])
            Path(keys, "leaf.key").write_text(leaf[1])
            context.load_cert_chain(Path(keys, "leaf.crt"), Path(keys, "leaf.key"))
        try:
            return httpx.get(f"{scheme}://{proxy.address}:{port}{path}", verify=context, trust_env=False, timeout=10)
        except httpx.HTTPError as err:
            return f"{type(err).__name__}: {err}"


def _signed_by_the_mesh_ca(world, caller: str, not_before: dt.datetime) -> tuple[str, str]:
    """A certificate for `caller` the mesh CA signs for an hour from `not_before` (the deploy's CA key)."""
    layout, plan = world.target.plan.layout, world.target.plan
    ca_key = serialization.load_pem_private_key(Path(layout.connect_ca_key_file).read_bytes(), password=None)
    root = x509.load_pem_x509_certificate(Path(layout.connect_ca_file).read_bytes())
    uri = service_uri(plan.spec.mesh.name, plan.spec.consul.datacenter, caller)
    cert, key = leaf_certificate(ca_key, root, uri, caller, 3600, not_before)
    return cert_pem(cert), key_pem(key)


@then(parsers.parse('a caller with a certificate the registry issued for "{caller}" reaches "{service}" '
                    'through the mTLS listener'))
def _(world, caller, service):
    leaf = world.target.consul().agent.connect.ca.leaf(caller)
    inst = world.target.instances_of(service)[0]
    answer = _mtls_get(world, f"/svc/{service}/api/v1/mesh/services", (leaf["CertPEM"], leaf["PrivateKeyPEM"]))
    # backend-api's own answer: its registry read lists this very instance
    assert isinstance(answer, httpx.Response) and answer.status_code == 200, answer
    assert f'"id": "{inst.id}"' in answer.text, answer.text[:300]


@then(parsers.parse('a caller with a certificate the registry issued for "{caller}" is denied "{service}" by the '
                    'intentions, with 403 and the reason'))
def _(world, caller, service):
    leaf = world.target.consul().agent.connect.ca.leaf(caller)
    answer = _mtls_get(world, f"/svc/{service}/", (leaf["CertPEM"], leaf["PrivateKeyPEM"]))
    assert isinstance(answer, httpx.Response) and answer.status_code == 403, answer
    assert answer.text.strip() == f"intention denies {caller} -> {service}", answer.text
    token = read_token(world.target.plan.layout.consul_token_file)
    authorized = httpx.post(f"http://{world.target.mesh.registry.addr}/v1/agent/connect/authorize", trust_env=False,
                            headers={"X-Consul-Token": token}, timeout=10,
                            json={"Target": service, "ClientCertURI": leaf["ServiceURI"]}).json()
    assert authorized["Authorized"] is False, authorized  # the registry's own answer agrees


@then("the mTLS listener refuses a caller with no certificate, another CA's, an expired one, and plaintext")
def _(world):
    now = dt.datetime.now(dt.timezone.utc)
    other_ca = ca_key("another mesh's secret")
    cert, key = leaf_certificate(other_ca, ca_certificate(other_ca, world.target.plan.spec.mesh.name),
                                 service_uri(world.target.plan.spec.mesh.name, "dc1", "intruder"), "intruder", 3600, now)
    tries = {"no certificate": _mtls_get(world, "/healthz", None),
             "another CA's": _mtls_get(world, "/healthz", (cert_pem(cert), key_pem(key))),
             "an expired one": _mtls_get(world, "/healthz", _signed_by_the_mesh_ca(world, "intruder", now - dt.timedelta(hours=2))),
             "plaintext": _mtls_get(world, "/healthz", None, scheme="http")}
    admitted = {what: answer.status_code for what, answer in tries.items() if isinstance(answer, httpx.Response)}
    assert not admitted, f"the mTLS listener answered {admitted}"
    # the same listener answers a certificate the mesh CA signed and that is current
    fresh = _mtls_get(world, "/healthz", _signed_by_the_mesh_ca(world, "intruder", now))
    assert isinstance(fresh, httpx.Response) and fresh.status_code == 200, fresh


# --- the edge: consumers' API keys ----------------------------------------------------------------


@then(parsers.parse('a request through the proxy\'s edge with {key} gets 401 and the reason'))
def _(world, key):
    headers = {"no API key": {}, "a wrong API key": {"X-API-Key": "0" * 64},
               "the key's hash": {"X-API-Key": sha256(world.target.edge_headers["X-API-Key"].encode()).hexdigest()}}[key]
    inst = world.target.instances_of("backend-api")[0]
    answer = httpx.get(f"{world.target.proxy_url}/svc/backend-api/health", headers=headers, trust_env=False, timeout=10)
    assert answer.status_code == 401, (answer.status_code, answer.text[:200])
    assert answer.text.strip() == "an API key of a consumer of the mesh is required (X-API-Key)", answer.text
    assert inst.id not in answer.text


@then(parsers.parse('a request with the operator\'s API key reaches "{service}" through the proxy\'s edge'))
def _(world, service):
    inst = world.target.instances_of(service)[0]
    answer = get(world, f"/svc/{service}/api/v1/mesh/services")
    assert isinstance(answer, httpx.Response) and answer.status_code == 200, answer
    assert f'"id": "{inst.id}"' in answer.text, answer.text[:300]  # backend-api's own answer


@then(parsers.parse('a request with the "{consumer}" consumer\'s API key is denied "{service}" by its intentions, '
                    'with 403 and the reason'))
def _(world, consumer, service):
    key = Path(world.target.plan.layout.consumer_key_file(consumer)).read_text().strip()
    answer = httpx.get(f"{world.target.proxy_url}/svc/{service}/health", headers={"X-API-Key": key}, trust_env=False,
                       timeout=10)
    assert (answer.status_code, answer.text.strip()) == (403, f"intention denies {consumer} -> {service}"), answer.text
