"""/v1/discovery-chain through py-consul: the default chain, and what service-defaults, -resolver,
-splitter and -router entries make of it; the compiler itself on entries given as data."""

from __future__ import annotations

import threading

import consul
import pytest

from meshspec.runtime.agent.discovery_chain import compile_chain
from tests.agent.conftest import client_with_rules

pytestmark = pytest.mark.integration

TOKEN = "chain-test-management-token"


def entries(**by_kind_and_name):
    """A lookup over entries given as kind__name=entry (dashes written as underscores)."""
    table = {tuple(k.replace("_", "-").split("--")): v for k, v in by_kind_and_name.items()}
    return lambda kind, name: table.get((kind, name))


def test_a_service_without_entries_has_consuls_default_chain(agent):
    c = agent.client()
    chain = c.discovery_chain.get("web")["Chain"]
    node_id = c.agent.self()["Config"]["NodeID"]
    target = "web.default.default.dc1"
    assert chain == {
        "ServiceName": "web", "Namespace": "default", "Partition": "default", "Datacenter": "dc1", "Default": True,
        "Protocol": "tcp", "StartNode": f"resolver:{target}",
        "Nodes": {f"resolver:{target}": {"Type": "resolver", "Name": target,
                                          "Resolver": {"ConnectTimeout": "5s", "Default": True, "Target": target}}},
        "Targets": {target: {"ID": target, "Service": "web", "Namespace": "default", "Partition": "default",
                             "Datacenter": "dc1", "MeshGateway": {}, "Subset": {}, "TransparentProxy": {},
                             "ConnectTimeout": "5s", "SNI": f"web.default.dc1.internal.{node_id}.consul",
                             "Name": f"web.default.dc1.internal.{node_id}.consul"}},
    }


def test_a_resolver_sets_timeout_default_subset_and_failover(agent):
    c = agent.client()
    assert c.config.set("service-resolver", "db", {
        "ConnectTimeout": "15s", "DefaultSubset": "v2",
        "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}, "v2": {"Filter": "Service.Meta.version == v2", "OnlyPassing": True}},
        "Failover": {"*": {"Service": "db-backup"}}})
    chain = c.discovery_chain.get("db")["Chain"]
    assert "Default" not in chain and chain["StartNode"] == "resolver:v2.db.default.default.dc1"
    resolver = chain["Nodes"]["resolver:v2.db.default.default.dc1"]["Resolver"]
    assert resolver == {"ConnectTimeout": "15s", "Target": "v2.db.default.default.dc1",
                        "Failover": {"Targets": ["db-backup.default.default.dc1"]}}
    target = chain["Targets"]["v2.db.default.default.dc1"]
    assert target["ServiceSubset"] == "v2" and target["Subset"] == {"Filter": "Service.Meta.version == v2", "OnlyPassing": True}
    assert chain["Targets"]["db-backup.default.default.dc1"]["ConnectTimeout"] == "5s"


def test_a_redirect_resolves_the_other_service():
    chain = compile_chain("old", entries(service_resolver__old={"Redirect": {"Service": "new"}},
                                         service_resolver__new={"ConnectTimeout": "2s"}), "dc1", "td.consul")
    assert chain["StartNode"] == "resolver:new.default.default.dc1"
    assert list(chain["Targets"]) == ["new.default.default.dc1"]
    assert chain["Nodes"]["resolver:new.default.default.dc1"]["Resolver"]["ConnectTimeout"] == "2s"


def test_a_loop_of_redirects_ends():
    chain = compile_chain("a", entries(service_resolver__a={"Redirect": {"Service": "b"}},
                                       service_resolver__b={"Redirect": {"Service": "a"}}), "dc1", "td.consul")
    assert chain["StartNode"].startswith("resolver:")


def test_routes_and_splits_only_for_http_protocols():
    splitter = {"Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]}
    resolver = {"Subsets": {"v1": {"Filter": "Service.Meta.v == 1"}, "v2": {"Filter": "Service.Meta.v == 2"}}}
    router = {"Routes": [{"Match": {"HTTP": {"PathPrefix": "/admin"}}, "Destination": {"Service": "admin"}}]}
    tcp = compile_chain("web", entries(service_splitter__web=splitter, service_resolver__web=resolver,
                                       service_router__web=router), "dc1", "td.consul")
    assert tcp["Protocol"] == "tcp" and tcp["StartNode"] == "resolver:web.default.default.dc1"
    http = compile_chain("web", entries(service_defaults__web={"Protocol": "http"}, service_splitter__web=splitter,
                                        service_resolver__web=resolver, service_router__web=router), "dc1", "td.consul")
    assert http["StartNode"] == "router:web.default.default"
    routes = http["Nodes"]["router:web.default.default"]["Routes"]
    assert [r["NextNode"] for r in routes] == ["resolver:admin.default.default.dc1", "splitter:web.default.default"]
    assert routes[-1]["Definition"]["Match"] == {"HTTP": {"PathPrefix": "/"}}  # the catch-all Consul appends
    splits = http["Nodes"]["splitter:web.default.default"]["Splits"]
    assert [(s["Weight"], s["NextNode"]) for s in splits] == [(90.0, "resolver:v1.web.default.default.dc1"),
                                                              (10.0, "resolver:v2.web.default.default.dc1")]
    via_proxy_defaults = compile_chain("web", entries(proxy_defaults__global={"Config": {"protocol": "http"}},
                                                      service_splitter__web=splitter, service_resolver__web=resolver),
                                       "dc1", "td.consul")
    assert via_proxy_defaults["StartNode"] == "splitter:web.default.default"


def test_overrides_customize_the_chain(agent):
    c = agent.client()
    chain = c.discovery_chain.get("web", override_connect_timeout="22s", override_protocol="grpc",
                                  override_mesh_gateway_mode="local")["Chain"]
    assert chain["Protocol"] == "grpc" and chain["CustomizationHash"]
    target = chain["Targets"]["web.default.default.dc1"]
    assert (target["ConnectTimeout"], target["MeshGateway"]) == ("22s", {"Mode": "local"})
    with pytest.raises(consul.ConsulException, match="invalid duration"):
        c.discovery_chain.get("web", override_connect_timeout="soon")


def test_the_chain_needs_service_read_and_wakes_on_an_entry(make_agent):
    agent = make_agent(token=TOKEN)
    c = agent.client(token=TOKEN)
    reader = client_with_rules(agent, TOKEN, "web-reader", 'service "web" { policy = "read" }')
    with pytest.raises(consul.ACLPermissionDenied):
        reader.discovery_chain.get("db")
    index = int(reader.http.session.get(f"http://{agent.address}/v1/discovery-chain/web",
                                        headers={"X-Consul-Token": reader.token}).headers["X-Consul-Index"])
    woke = {}
    url = f"http://{agent.address}/v1/discovery-chain/web?index={index}&wait=10s"
    watcher = threading.Thread(target=lambda: woke.update(r=reader.http.session.get(url, headers={"X-Consul-Token": reader.token})))
    watcher.start()
    assert c.config.set("service-resolver", "web", {"ConnectTimeout": "9s"})
    watcher.join(10)
    assert woke["r"].json()["Chain"]["Nodes"]["resolver:web.default.default.dc1"]["Resolver"]["ConnectTimeout"] == "9s"
