"""Agent registration, catalog and health shapes, driven with py-consul."""

from __future__ import annotations

import json
import urllib.parse

import consul
import pytest
from consul.callback import CB

pytestmark = pytest.mark.integration


def raw(response):
    """A py-consul callback that keeps the whole response (status, headers, body)."""
    return response


def test_register_service_with_checks_and_every_field(agent, target, wait_until):
    c = agent.client()
    assert c.agent.service.register(
        "web", service_id="web-1", address="127.0.0.1", port=target.port, tags=["v1", "blue"],
        meta={"team": "mesh"}, weights={"Passing": 3, "Warning": 1}, enable_tag_override=True,
        tagged_addresses={"lan": {"address": "127.0.0.1", "port": target.port}},
        check=consul.Check.http(target.url, interval="1s", timeout="1s"),
        extra_checks=[consul.Check.tcp("127.0.0.1", target.port, interval="1s")],
    )
    service = c.agent.services()["web-1"]
    assert service["Service"] == "web" and service["Tags"] == ["v1", "blue"]
    assert service["Meta"] == {"team": "mesh"} and service["Port"] == target.port
    assert service["Weights"] == {"Passing": 3, "Warning": 1} and service["EnableTagOverride"] is True
    assert service["TaggedAddresses"] == {"lan": {"Address": "127.0.0.1", "Port": target.port}}
    assert c.agent.service_definition("web-1")["ID"] == "web-1"

    checks = c.agent.checks()
    assert set(checks) == {"service:web-1:1", "service:web-1:2"}
    assert checks["service:web-1:1"]["Type"] == "http" and checks["service:web-1:2"]["Type"] == "tcp"
    assert checks["service:web-1:1"]["Name"] == "Service 'web' check"

    def all_passing():
        _, entries = c.health.service("web", passing=True)
        return entries

    entries = wait_until(all_passing, 10)
    entry = entries[0]
    assert entry["Node"]["Node"] == "test-node" and entry["Node"]["Datacenter"] == "dc1"
    assert entry["Service"]["ID"] == "web-1" and entry["Service"]["Port"] == target.port
    assert [ch["CheckID"] for ch in entry["Checks"]] == ["serfHealth", "service:web-1:1", "service:web-1:2"]
    http_output = next(ch["Output"] for ch in entry["Checks"] if ch["CheckID"] == "service:web-1:1")
    assert http_output == f"HTTP GET {target.url}: 200 OK Output: ok"

    _, services = c.catalog.services()
    assert services == {"web": ["v1", "blue"]}
    _, nodes = c.catalog.service("web", tag="V1")
    assert nodes[0]["ServiceID"] == "web-1" and nodes[0]["ServiceAddress"] == "127.0.0.1"
    assert c.catalog.service("web", tag="nope")[1] == []
    assert c.health.service("web", tag=["v1", "blue"])[1][0]["Service"]["ID"] == "web-1"
    assert c.health.service("web", tag=["v1", "green"])[1] == []
    assert len(c.health.checks("web")[1]) == 2
    assert c.catalog.node("test-node")[1]["Services"]["web-1"]["Service"] == "web"
    assert [ch["CheckID"] for ch in c.health.node("test-node")[1]][0] == "serfHealth"
    assert c.agent.self()["Config"]["NodeName"] == "test-node"
    assert c.agent.members()[0]["Name"] == "test-node"
    assert c.status.leader() and c.status.peers()

    assert c.agent.service.deregister("web-1")
    assert c.agent.services() == {} and c.agent.checks() == {}
    assert c.catalog.services()[1] == {}


def test_filter_expressions(agent):
    c = agent.client()
    c.agent.service.register("api", service_id="api-1", port=1, meta={"env": "prod"}, tags=["a"])
    c.agent.service.register("api", service_id="api-2", port=2, meta={"env": "dev"}, tags=["b"])
    _, prod = c.health.service("api", filter_expr='Service.Meta.env == "prod"')
    assert [e["Service"]["ID"] for e in prod] == ["api-1"]
    _, tagged = c.catalog.service("api", filter_expr='"b" in ServiceTags')
    assert [n["ServiceID"] for n in tagged] == ["api-2"]
    assert set(c.agent.services(filter_expr="Port != 1")) == {"api-2"}
    with pytest.raises(consul.ConsulException, match="Failed to create boolean expression evaluator"):
        c.health.service("api", filter_expr="Service.Port ==")


def test_replace_existing_checks(agent):
    c = agent.client()
    c.agent.service.register("db", service_id="db", check=consul.Check.ttl("30s"),
                             extra_checks=[consul.Check.ttl("30s")])
    assert set(c.agent.checks()) == {"service:db:1", "service:db:2"}
    c.agent.service.register("db", service_id="db", check=consul.Check.ttl("30s"), replace_existing_checks=True)
    assert set(c.agent.checks()) == {"service:db"}


def test_check_register_and_ttl_updates(agent):
    c = agent.client()
    c.agent.service.register("worker", service_id="w1")
    assert c.agent.check.register("heartbeat", consul.Check.ttl("30s"), check_id="hb", service_id="w1", notes="n")
    check = c.agent.checks()["hb"]
    assert check["Status"] == "critical" and check["ServiceName"] == "worker" and check["Notes"] == "n"
    for call, status in ((c.agent.check.ttl_pass, "passing"), (c.agent.check.ttl_warn, "warning"),
                         (c.agent.check.ttl_fail, "critical")):
        call("hb", notes=f"now {status}")
        check = c.agent.checks()["hb"]
        assert (check["Status"], check["Output"]) == (status, f"now {status}")
    ok = c.http.put(raw, "/v1/agent/check/update/hb", data=json.dumps({"Status": "passing", "Output": "fine"}))
    assert ok.code == 200 and c.agent.checks()["hb"]["Output"] == "fine"
    assert c.health.state("passing")[1][-1]["CheckID"] == "hb"
    assert c.agent.check.deregister("hb")
    assert "hb" not in c.agent.checks()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("put", "/v1/agent/service/register", "{bad json", 400, "Request decode failed: "),
        ("put", "/v1/agent/service/register", '{"Port": 80}', 400, "Missing service name"),
        ("put", "/v1/agent/service/register", '{"Name": "x", "Port": "80"}', 400,
         "Request decode failed: json: cannot unmarshal string into Go struct field ServiceDefinition.Port of type int"),
        ("put", "/v1/agent/service/register", '{"Name": "x", "Check": {"Interval": "1s"}}', 400, "Must provide TTL"),
        ("put", "/v1/agent/service/register", '{"Name": "x", "Check": {"HTTP": "http://x", "Interval": "1s"}, "Address": "0.0.0.0"}', 400, "Invalid service address"),
        ("put", "/v1/agent/service/register", '{"Name": "x", "Check": {"Args": ["true"], "Interval": "1s"}}', 400, "Scripts are disabled"),
        ("put", "/v1/agent/check/register", '{"TTL": "10s"}', 400, "Missing check name"),
        ("put", "/v1/agent/check/register", '{"Name": "c", "TTL": "10s", "ServiceID": "nope"}', 404,
         'ServiceID "nope" does not exist'),
        ("put", "/v1/agent/check/pass/nope", "", 404, 'Unknown check ID \'nope\''),
        ("put", "/v1/agent/check/update/nope", '{"Status": "bogus"}', 400, "Invalid check status: 'bogus'"),
        ("put", "/v1/agent/service/deregister/nope", "", 404, "Unknown service ID 'nope'"),
        ("get", "/v1/agent/service/register", None, 405, "method GET not allowed"),
        ("get", "/v1/agent/check/pass/x", None, 405, "method GET not allowed"),
        ("get", "/v1/health/state/bogus", None, 400, "Bad state"),
        ("get", "/v1/kv/x?index=abc", None, 400, "Invalid index"),
        ("get", "/v1/kv/x?index=1&wait=forever", None, 400, "Invalid wait time"),
        ("put", "/v1/kv/x?cas=-1", "v", 400, "Invalid cas index"),
        ("get", "/v1/nope", None, 404, "404 page not found"),
    ],
)
def test_bad_requests_get_consul_codes_and_messages(agent, method, path, body, status, message):
    c = agent.client()
    call = getattr(c.http, method)
    path, _, query = path.partition("?")  # py-consul quotes "?" inside a path: pass params apart
    params = urllib.parse.parse_qsl(query)
    response = call(raw, path, params=params, data=body) if body is not None else call(raw, path, params=params)
    assert response.code == status, response.body
    assert response.body.startswith(message), response.body
    assert "Traceback" not in response.body
    assert response.headers["X-Consul-Index"].isdigit()
    assert response.headers["X-Consul-KnownLeader"] == "true"
    assert response.headers["X-Consul-LastContact"] == "0"


def test_py_consul_raises_on_bad_request(agent):
    with pytest.raises(consul.ConsulException, match="Missing check name"):
        agent.client().http.put(CB.boolean(), "/v1/agent/check/register", data='{"ttl": "5s"}')


def test_the_agent_describes_itself_as_a_one_server_consul(agent):
    """agent/self names the leader where Consul does (Stats.consul.leader_addr, as status/leader);
    the WAN pool lists the server as <node>.<datacenter> on Serf's WAN port."""
    c = agent.client()
    me = c.agent.self()
    leader = c.status.leader()
    assert me["Stats"]["consul"]["leader_addr"] == leader and me["Stats"]["consul"]["leader"] == "true"
    [lan], [wan] = c.agent.members(), c.agent.members(wan=True)
    dc = me["Config"]["Datacenter"]
    assert (lan["Name"], lan["Port"]) == (me["Config"]["NodeName"], 8301)
    assert (wan["Name"], wan["Port"]) == (f"{me['Config']['NodeName']}.{dc}", 8302)
