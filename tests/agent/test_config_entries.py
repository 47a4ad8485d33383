"""Config entries through py-consul: upsert with cas, read, list, delete, Consul's errors, the ACL
each kind needs, and service-intentions as a view of the intentions themselves."""

from __future__ import annotations

import consul
import pytest
import requests

from tests.agent.conftest import client_with_rules

pytestmark = pytest.mark.integration

TOKEN = "config-test-management-token"


def test_an_entry_is_written_read_listed_and_deleted_with_cas(agent):
    c = agent.client()
    assert c.config.set("service-defaults", "web", {"Protocol": "http"}) is True
    entry = c.config.get("service-defaults", "web")
    assert (entry["Kind"], entry["Name"], entry["Protocol"]) == ("service-defaults", "web", "http")
    assert c.config.set("service-defaults", "web", {"Protocol": "grpc"}, cas=entry["ModifyIndex"] + 5) is False
    assert c.config.set("service-defaults", "web", {"Protocol": "grpc"}, cas=entry["ModifyIndex"]) is True
    assert c.config.get("service-defaults", "web")["Protocol"] == "grpc"
    c.config.set("service-defaults", "api", {"Protocol": "tcp"})
    assert [e["Name"] for e in c.config.list("service-defaults")] == ["api", "web"]
    assert c.config.delete("service-defaults", "web") is True
    missing = requests.get(f"http://{agent.address}/v1/config/service-defaults/web", timeout=5)
    assert (missing.status_code, missing.text) == (404, 'Config entry not found for "service-defaults" / "web"')


@pytest.mark.parametrize(("body", "status", "text"), [
    ({"Kind": "nonsense", "Name": "x"}, 400, "invalid config entry kind: nonsense"),
    ({"Name": "x"}, 400, "Request decoding failed: Payload does not contain a Kind/kind key at the top level"),
    ({"Kind": "proxy-defaults", "Name": "mine"}, 400,
     'Request decoding failed: invalid name ("mine"), only "global" is supported'),
])
def test_bad_entries_are_refused(agent, body, status, text):
    answer = requests.put(f"http://{agent.address}/v1/config", json=body, timeout=5)
    assert (answer.status_code, answer.text) == (status, text)


def test_service_intentions_entries_are_the_intentions(agent):
    c = agent.client()
    c.connect.intentions.upsert("old", "db", action="allow")
    assert c.config.set("service-intentions", "db", {"Sources": [
        {"Name": "web", "Action": "allow"}, {"Name": "*", "Action": "deny"}]}) is True
    assert sorted((i["SourceName"], i["Action"]) for i in c.connect.intentions.list()) == [("*", "deny"), ("web", "allow")]
    entry = c.config.get("service-intentions", "db")
    assert [(s["Name"], s["Action"], s["Precedence"]) for s in entry["Sources"]] == [("web", "allow", 9), ("*", "deny", 8)]
    assert c.connect.intentions.check("web", "db") is True and c.connect.intentions.check("api", "db") is False
    c.config.delete("service-intentions", "db")
    assert c.connect.intentions.list() == []


def test_writing_an_entry_needs_what_its_kind_configures(make_agent):
    agent = make_agent(token=TOKEN)
    admin = agent.client(token=TOKEN)
    web = client_with_rules(agent, TOKEN, "web", 'service "web" { policy = "write" }')
    assert web.config.set("service-defaults", "web", {"Protocol": "http"}) is True
    with pytest.raises(consul.ACLPermissionDenied):
        web.config.set("service-defaults", "db", {"Protocol": "http"})
    with pytest.raises(consul.ACLPermissionDenied):
        web.config.set("proxy-defaults", "global", {"Config": {}})  # operator:write
    admin.config.set("service-defaults", "db", {"Protocol": "tcp"})
    assert [e["Name"] for e in web.config.list("service-defaults")] == ["web"]  # db's is filtered out


@pytest.mark.parametrize("kind, entry, status, message", [
    ("service-defaults", {"Protocol": "http", "Colour": "blue"}, 400, 'invalid config key "Colour"'),
    ("service-resolver", {"ConnectTimeout": "soon"}, 400, "ConnectTimeout: time: invalid duration"),
    ("service-resolver", {"DefaultSubset": "v9", "Subsets": {"v1": {}}}, 500, 'Bad DefaultSubset "v9": not a valid subset'),
    ("service-resolver", {"Subsets": {"V_1": {}}}, 500, 'Subset "V_1" is invalid'),
    ("service-resolver", {"Redirect": {"Service": "b"}, "Failover": {"*": {"Service": "c"}}}, 500, "cannot both be set"),
    ("service-resolver", {"Failover": {"v2": {"Service": "c"}}}, 500, 'Bad Failover["v2"]: not a valid subset'),
    ("service-splitter", {"Splits": [{"Weight": 60}, {"Weight": 30, "Service": "b"}]}, 500, "must be 100, not 90.00"),
    ("service-router", {"Routes": []}, 500, 'uses a protocol "tcp" that does not permit advanced routing'),
    ("ingress-gateway", {"Listeners": [], "Lisenters": []}, 400, 'invalid config key "Lisenters"'),
    ("sameness-group", {}, 400, "sameness-groups are an enterprise-only feature"),
])
def test_an_entry_consul_would_refuse_is_refused_and_not_stored(agent, kind, entry, status, message):
    answer = requests.put(f"http://{agent.address}/v1/config", json={"Kind": kind, "Name": "web", **entry}, timeout=5)
    assert answer.status_code == status and message in answer.text, answer.text
    assert requests.get(f"http://{agent.address}/v1/config/{kind}/web", timeout=5).status_code == 404


def test_routers_and_splitters_are_stored_once_the_protocol_permits_them(agent):
    c = agent.client()
    assert c.config.set("service-defaults", "web", {"Protocol": "http", "mesh_gateway": {"Mode": "local"}})
    assert c.config.set("service-resolver", "web", {"connect_timeout": "3s", "Subsets": {"v1": {"Filter": "Service.Meta.v == 1"}}})
    assert c.config.set("service-splitter", "web", {"Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10}]})
    assert c.config.set("service-router", "web", {"Routes": [{"Match": {"HTTP": {"PathPrefix": "/admin"}}}]})
    assert c.discovery_chain.get("web")["Chain"]["StartNode"] == "router:web.default.default"
