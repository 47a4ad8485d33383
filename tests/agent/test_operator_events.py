"""Operator, coordinate and event endpoints, agent tokens and peer= through py-consul: the
one-server cluster as Consul's API shows one."""

from __future__ import annotations

import base64
import threading
import time

import consul
import pytest
import requests

from meshspec.runtime.agent.routes_event import id_to_index
from tests.agent.conftest import client_with_rules

pytestmark = pytest.mark.integration

TOKEN = "operator-test-management-token"


def test_the_raft_configuration_and_autopilot_show_one_healthy_leader(agent):
    c = agent.client()
    config = c.operator.raft_config()
    (server,) = config["Servers"]
    assert server["Node"] == "test-node" and server["Leader"] and server["Voter"]
    assert server["Address"] == requests.get(f"http://{agent.address}/v1/status/leader", timeout=5).json()
    health = requests.get(f"http://{agent.address}/v1/operator/autopilot/health", timeout=5).json()
    assert health["Healthy"] is True and health["FailureTolerance"] == 0 and health["Servers"][0]["Leader"]
    autopilot = requests.get(f"http://{agent.address}/v1/operator/autopilot/configuration", timeout=5).json()
    assert autopilot["CleanupDeadServers"] is True and autopilot["MaxTrailingLogs"] == 250


def test_usage_counts_services_and_instances(agent):
    c = agent.client()
    c.agent.service.register("web", service_id="web-1", port=1)
    c.agent.service.register("web", service_id="web-2", port=2)
    c.agent.service.register("db", service_id="db-1", port=3)
    usage = requests.get(f"http://{agent.address}/v1/operator/usage", timeout=5).json()["Usage"]["dc1"]
    assert (usage["Services"], usage["ServiceInstances"], usage["BillableServiceInstances"], usage["Nodes"]) == (2, 3, 3, 1)


def test_coordinates_of_the_one_node(agent):
    c = agent.client()
    (dc,) = c.coordinate.datacenters()
    assert dc["Datacenter"] == "dc1" and dc["Coordinates"][0]["Node"] == "test-node.dc1"
    _, nodes = c.coordinate.nodes()
    assert [(n["Node"], len(n["Coord"]["Vec"])) for n in nodes] == [("test-node", 8)]
    assert c.coordinate.node("test-node")[1][0]["Coord"] == nodes[0]["Coord"]
    assert requests.get(f"http://{agent.address}/v1/coordinate/node/nope", timeout=5).status_code == 404


def test_events_reach_this_node_when_their_filters_match(agent):
    c = agent.client()
    c.agent.service.register("web", service_id="web-1", port=1, tags=["blue"])
    fired = c.event.fire("deploy", "v1.2.3")
    assert fired["Name"] == "deploy" and fired["LTime"] == 1 and base64.b64decode(fired["Payload"]) == b"v1.2.3"
    c.event.fire("deploy", "to web blue", service="^we", tag="^bl")
    c.event.fire("deploy", "elsewhere", node="^other-node$")
    c.event.fire("deploy", "to db", service="^db$")
    c.event.fire("restart")
    index, events = c.event.list(name="deploy")
    assert [e["Payload"] for e in events] == [b"v1.2.3", b"to web blue"]  # py-consul decodes list payloads
    assert int(index) == id_to_index(events[-1]["ID"])
    assert [e["LTime"] for e in c.event.list()[1]] == [1, 2, 5]
    bad = requests.put(f"http://{agent.address}/v1/event/fire/x?service=web&tag=(", timeout=5)
    assert bad.status_code == 500 and bad.text.startswith("Invalid tag filter")


def test_an_event_wakes_a_blocked_watcher(agent):
    c = agent.client()
    index, events = c.event.list(name="wake")
    assert events == [] and int(index) == 1  # never 0: a watcher passing it back must wait
    woke: list[float] = []

    def watch() -> None:
        _, seen = c.event.list(name="wake", index=index, wait="10s")
        woke.append(time.monotonic() if seen else 0.0)

    thread = threading.Thread(target=watch)
    thread.start()
    time.sleep(0.3)
    fired_at = time.monotonic()
    c.event.fire("wake")
    thread.join(10)
    assert woke and 0 < woke[0] - fired_at < 1.0


def test_agent_tokens_answer_401_without_acls_and_set_the_default_token_with_them(make_agent):
    plain = make_agent(name="plain")
    answer = requests.put(f"http://{plain.address}/v1/agent/token/default", json={"Token": "x"}, timeout=5)
    assert (answer.status_code, answer.text) == (401, "ACL support disabled")

    secured = make_agent(token=TOKEN, name="secured")
    assert requests.get(f"http://{secured.address}/v1/agent/self", timeout=5).status_code == 403
    unknown = requests.put(f"http://{secured.address}/v1/agent/token/nonsense", json={"Token": "x"},
                           headers={"X-Consul-Token": TOKEN}, timeout=5)
    assert (unknown.status_code, unknown.text) == (404, 'Token "nonsense" is unknown')
    assert requests.put(f"http://{secured.address}/v1/agent/token/default", json={"Token": TOKEN},
                        headers={"X-Consul-Token": TOKEN}, timeout=5).status_code == 200
    assert requests.get(f"http://{secured.address}/v1/agent/self", timeout=5).status_code == 200  # default token


def test_peer_queries_find_nothing_on_a_node_without_peerings(agent):
    c = agent.client()
    c.agent.service.register("web", service_id="web-1", port=1)
    assert len(c.health.service("web")[1]) == 1
    for path in ("/v1/health/service/web", "/v1/catalog/service/web"):
        assert requests.get(f"http://{agent.address}{path}?peer=remote", timeout=5).json() == []
    assert requests.get(f"http://{agent.address}/v1/catalog/services?peer=remote", timeout=5).json() == {}


def test_the_one_server_cannot_be_removed_nor_hand_over_leadership(agent):
    """Raft keeps at least one voter and finds no other to lead; an unknown peer is not in the configuration."""
    c = agent.client()
    (server,) = c.operator.raft_config()["Servers"]
    url = f"http://{agent.address}/v1/operator/raft/peer"
    unknown = requests.delete(url, params={"address": "10.9.9.9:8300"}, timeout=5)
    assert (unknown.status_code, unknown.text) == (500, 'address "10.9.9.9:8300" was not found in the Raft configuration')
    assert requests.delete(url, params={"id": "nope"}, timeout=5).text == 'id "nope" was not found in the Raft configuration'
    itself = requests.delete(url, params={"id": server["ID"]}, timeout=5)
    assert itself.status_code == 500 and "need at least one voter" in itself.text
    assert requests.delete(url, timeout=5).status_code == 400
    assert requests.delete(url, params={"id": "a", "address": "b"}, timeout=5).status_code == 400
    with pytest.raises(consul.ConsulException, match="cannot find peer"):
        c.operator.raft_transfer_leader()
    assert c.operator.raft_config()["Servers"] == [{**server, "LastIndex": c.operator.raft_config()["Servers"][0]["LastIndex"]}]


def test_autopilot_settings_are_stored_with_cas_and_read_back(agent):
    c = agent.client()
    before = c.operator.autopilot_configuration()
    assert c.operator.update_autopilot_configuration(cleanup_dead_servers=False, last_contact_threshold="300ms",
                                                     max_trailing_logs=500, server_stabilization_time="60s") is True
    after = c.operator.autopilot_configuration()
    assert (after["CleanupDeadServers"], after["LastContactThreshold"], after["MaxTrailingLogs"]) == (False, "300ms", 500)
    assert after["ServerStabilizationTime"] == "1m0s"  # as Go's Duration.String writes it
    assert after["ModifyIndex"] > before["ModifyIndex"]
    assert c.operator.update_autopilot_configuration(max_trailing_logs=1, cas=after["ModifyIndex"] - 1) is False
    assert c.operator.autopilot_configuration()["MaxTrailingLogs"] == 500
    assert c.operator.update_autopilot_configuration(max_trailing_logs=1, cas=after["ModifyIndex"]) is True
    bad = requests.put(f"http://{agent.address}/v1/operator/autopilot/configuration", json={"LastContactThreshold": "soon"}, timeout=5)
    assert bad.status_code == 400 and "invalid duration" in bad.text


def test_no_keyring_without_gossip_encryption(agent):
    c = agent.client()
    with pytest.raises(consul.ConsulException, match=r"Keyring is empty \(encryption not enabled\)"):
        c.operator.keyring_list()
    with pytest.raises(consul.ConsulException, match=r"No keyring to modify \(encryption not enabled\)"):
        c.operator.keyring_install("pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=")


def test_operator_writes_need_operator_write(make_agent):
    agent = make_agent(token=TOKEN)
    reader = client_with_rules(agent, TOKEN, "operator-reader", 'operator = "read"\nkeyring = "read"')
    assert reader.operator.autopilot_configuration()["MaxTrailingLogs"] == 250
    for call in (lambda: reader.operator.update_autopilot_configuration(max_trailing_logs=1),
                 lambda: reader.operator.raft_transfer_leader(),
                 lambda: reader.operator.keyring_install("pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=")):
        with pytest.raises(consul.ACLPermissionDenied):
            call()


def test_a_coordinate_sent_for_a_known_node_is_kept_and_wakes_watchers(agent):
    c = agent.client()
    c.catalog.register("far-node", "10.1.1.1")
    coord = {"Vec": [0.1, 0, 0, 0, 0, 0, 0, 0.2], "Error": 0.5, "Adjustment": 0.01, "Height": 0.0002}
    index, _ = c.coordinate.nodes()
    woke = {}
    watcher = threading.Thread(target=lambda: woke.update(result=c.coordinate.nodes(index=index, wait="10s")))
    watcher.start()
    time.sleep(0.2)
    assert c.coordinate.update("far-node", coord) is True
    watcher.join(10)
    new_index, nodes = woke["result"]
    assert new_index > index and {n["Node"]: n["Coord"] for n in nodes}["far-node"] == coord
    assert c.coordinate.update("never-registered", coord) is True  # skipped, as Consul's batch skips it
    assert "never-registered" not in {n["Node"] for n in c.coordinate.nodes()[1]}
    for bad, why in (({**coord, "Vec": [0.1] * 3}, "incompatible coordinate"), ({**coord, "Error": "x"}, "invalid coordinate")):
        with pytest.raises(consul.ConsulException, match=why):
            c.coordinate.update("far-node", bad)
    c.catalog.deregister("far-node")
    assert [n["Node"] for n in c.coordinate.nodes()[1]] == ["test-node"]
