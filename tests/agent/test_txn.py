"""/v1/txn through py-consul: KV operations all or nothing, at one index, with Consul's texts."""

from __future__ import annotations

import base64

import consul
import pytest
import requests

from tests.agent.conftest import client_with_rules

pytestmark = pytest.mark.integration

TOKEN = "txn-test-management-token"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kv(verb: str, key: str, value: str | None = None, **extra) -> dict:
    op = {"Verb": verb, "Key": key, **extra}
    if value is not None:
        op["Value"] = b64(value)
    return {"KV": op}


def put(agent, ops: list[dict], token: str | None = None) -> requests.Response:
    headers = {"X-Consul-Token": token} if token else {}
    return requests.put(f"http://{agent.address}/v1/txn", json=ops, headers=headers, timeout=5)


def test_a_transaction_writes_every_key_at_one_index_and_reads_what_it_wrote(agent):
    c = agent.client()
    c.kv.put("cfg/old", "gone soon")
    answer = c.txn.put([kv("set", "cfg/a", "1"), kv("set", "cfg/b", "2", Flags=7), kv("delete", "cfg/old"),
                        kv("get", "cfg/a"), kv("check-not-exists", "cfg/old")])
    assert answer["Errors"] is None
    set_a, set_b, got_a = (r["KV"] for r in answer["Results"])
    assert set_a["Value"] is None and set_b["Flags"] == 7  # writes carry no value, reads do
    assert got_a["Value"] == b64("1")
    assert set_a["ModifyIndex"] == set_b["ModifyIndex"] == got_a["ModifyIndex"]  # one index for all
    index, entries = c.kv.get("cfg/", recurse=True)
    assert [(e["Key"], e["Value"]) for e in entries] == [("cfg/a", b"1"), ("cfg/b", b"2")]
    assert int(index) == set_a["ModifyIndex"]


def test_a_failing_operation_rolls_back_the_whole_transaction(agent):
    c = agent.client()
    c.kv.put("bank/alice", "100")
    _, alice = c.kv.get("bank/alice")
    ops = [kv("cas", "bank/alice", "50", Index=alice["ModifyIndex"]), kv("set", "bank/bob", "50"),
           kv("check-index", "bank/alice", Index=alice["ModifyIndex"] + 99), kv("get", "bank/nobody"),
           kv("frobnicate", "bank/x")]
    answer = put(agent, ops)
    assert answer.status_code == 409
    body = answer.json()
    assert body["Results"] is None
    # The cas ran first, so the check sees alice's new index, not the one it was given.
    assert body["Errors"] == [
        {"OpIndex": 2, "What": f'failed index check for key "bank/alice", current modify index '
                               f'{alice["ModifyIndex"] + 1} != {alice["ModifyIndex"] + 99}'},
        {"OpIndex": 3, "What": 'key "bank/nobody" doesn\'t exist'},
        {"OpIndex": 4, "What": 'unknown KV verb "frobnicate"'},
    ]
    assert c.kv.get("bank/alice")[1]["Value"] == b"100" and c.kv.get("bank/bob")[1] is None
    assert c.kv.get("bank/alice")[1]["ModifyIndex"] == alice["ModifyIndex"]
    with pytest.raises(consul.ConsulException, match="409"):
        c.txn.put([kv("cas", "bank/alice", "0", Index=0)])  # index 0: only if absent


def test_locks_and_session_checks_in_a_transaction(agent):
    c = agent.client()
    sid = c.session.create(lock_delay=0)
    other = c.session.create(lock_delay=0)
    answer = c.txn.put([kv("lock", "leader", "me", Session=sid), kv("check-session", "leader", Session=sid)])
    assert answer["Results"][0]["KV"]["Session"] == sid and answer["Results"][0]["KV"]["LockIndex"] == 1
    refused = put(agent, [kv("lock", "leader", "them", Session=other), kv("unlock", "leader", Session=other),
                          kv("lock", "x", Session="00000000-0000-0000-0000-00000000000f"), kv("lock", "y")])
    assert [e["What"] for e in refused.json()["Errors"]] == [
        'failed to lock key "leader", lock is already held',
        'failed to unlock key "leader", lock isn\'t held, or is held by another session',
        'invalid session "00000000-0000-0000-0000-00000000000f"',
        "missing session",
    ]
    answer = c.txn.put([kv("unlock", "leader", "bye", Session=sid), kv("lock", "leader", "them", Session=other)])
    assert answer["Results"][1]["KV"]["Session"] == other and answer["Results"][1]["KV"]["LockIndex"] == 2


def test_delete_tree_get_tree_and_delete_cas(agent):
    c = agent.client()
    for key in ("t/a", "t/b", "u/c"):
        c.kv.put(key, key)
    _, a = c.kv.get("t/a")
    assert [r["KV"]["Key"] for r in c.txn.put([kv("get-tree", "t/")])["Results"]] == ["t/a", "t/b"]
    assert put(agent, [kv("delete-cas", "t/a", Index=a["ModifyIndex"] + 1)]).json()["Errors"] == [
        {"OpIndex": 0, "What": 'failed to delete key "t/a", index is stale'}]
    assert c.txn.put([kv("delete-cas", "t/a", Index=a["ModifyIndex"]), kv("delete-cas", "t/missing", Index=5),
                      kv("delete-tree", "t/")])["Results"] == []
    assert c.kv.get("t/", recurse=True)[1] is None and c.kv.get("u/c")[1] is not None


def test_bad_bodies_and_limits_answer_as_consul(agent):
    too_many = put(agent, [kv("get-or-empty", f"k{i}") for i in range(65)])
    assert (too_many.status_code, too_many.text) == (413, "Transaction contains too many operations (65 > 64)")
    bad_value = put(agent, [{"KV": {"Verb": "set", "Key": "k", "Value": "not base64!"}}])
    assert bad_value.status_code == 400 and bad_value.text.startswith("Failed to parse body: failed to decode value")
    unknown = put(agent, [{"Node": {"Verb": "frob", "Node": {"Node": "n2"}}}, {"Session": {"Verb": "set"}}])
    assert [e["What"] for e in unknown.json()["Errors"]] == ['unknown Node verb "frob"', 'unknown Session verb "set"']
    own = put(agent, [{"Node": {"Verb": "set", "Node": {"Node": "test-node", "Address": "10.0.0.2"}}}])
    assert own.status_code == 409 and "this agent's own" in own.json()["Errors"][0]["What"]


def test_acls_deny_each_operation_and_write_nothing(make_agent):
    agent = make_agent(token=TOKEN)
    denied = put(agent, [kv("set", "secret", "x")])
    assert denied.status_code == 409
    (error,) = denied.json()["Errors"]
    assert error["OpIndex"] == 0 and "lacks permission 'key:write'" in error["What"]
    assert put(agent, [kv("set", "secret", "x")], token=TOKEN).status_code == 200
    assert agent.client(token=TOKEN).kv.get("secret")[1]["Value"] == b"x"


def test_an_acknowledged_transaction_survives_sigkill(make_agent):
    agent = make_agent()
    c = agent.client()
    assert c.txn.put([kv("set", f"durable/{i}", str(i)) for i in range(20)])["Errors"] is None
    agent.kill()
    agent.start()
    _, entries = agent.client().kv.get("durable/", recurse=True)
    assert len(entries) == 20 and len({e["ModifyIndex"] for e in entries}) == 1


def test_node_service_and_check_gets_read_the_catalog_in_a_transaction(agent):
    c = agent.client()
    c.agent.service.register("web", service_id="web-1", port=80, check=consul.Check.ttl("30s"))
    c.catalog.register("rds-1", "10.9.9.9", service={"Service": "db", "ID": "db-ext", "Port": 5432},
                       check={"CheckID": "db-probe", "ServiceID": "db-ext", "Status": "passing"})
    answer = c.txn.put([
        {"Node": {"Verb": "get", "Node": {"Node": "test-node"}}},
        {"Node": {"Verb": "get", "Node": {"Node": "rds-1"}}},
        {"Service": {"Verb": "get", "Node": "test-node", "Service": {"ID": "web-1"}}},
        {"Service": {"Verb": "get", "Node": "rds-1", "Service": {"ID": "db-ext"}}},
        {"Check": {"Verb": "get", "Check": {"Node": "test-node", "CheckID": "service:web-1"}}},
        {"Check": {"Verb": "get", "Check": {"Node": "rds-1", "CheckID": "db-probe"}}},
        kv("get-or-empty", "nothing"),
    ])
    results = answer["Results"]
    assert [results[0]["Node"]["Node"], results[1]["Node"]["Address"]] == ["test-node", "10.9.9.9"]
    assert [results[2]["Service"]["Port"], results[3]["Service"]["Port"]] == [80, 5432]
    assert [results[4]["Check"]["Status"], results[5]["Check"]["Status"]] == ["critical", "passing"]
    missing = put(agent, [{"Service": {"Verb": "get", "Node": "rds-1", "Service": {"ID": "nope"}}}])
    assert missing.json()["Errors"] == [{"OpIndex": 0, "What": 'service "nope" on node "rds-1" doesn\'t exist'}]


def test_nodes_services_and_checks_are_written_with_kv_in_one_transaction(agent):
    """A node, its service and its check registered with a key in one transaction, read back through
    the catalog and health APIs; CAS on each; deleting the node takes its service and check along."""
    c = agent.client()
    answer = c.txn.put([
        {"Node": {"Verb": "set", "Node": {"Node": "rds-1", "Address": "10.9.9.9", "Meta": {"zone": "a"}}}},
        {"Service": {"Verb": "set", "Node": "rds-1", "Service": {"ID": "db-ext", "Service": "db", "Port": 5432}}},
        {"Check": {"Verb": "set", "Check": {"Node": "rds-1", "CheckID": "db-probe", "Name": "probe",
                                            "ServiceID": "db-ext", "Status": "passing"}}},
        kv("set", "db/endpoint", "10.9.9.9:5432"),
    ])
    node, service, check, entry = (r.get("Node") or r.get("Service") or r.get("Check") or r["KV"] for r in answer["Results"])
    assert node["ModifyIndex"] == service["ModifyIndex"] == entry["ModifyIndex"]  # one index for all of it
    assert (service["Service"], service["Port"], check["Status"], check["ServiceName"]) == ("db", 5432, "passing", "db")
    _, nodes = c.health.service("db", passing=True)
    assert [(n["Node"]["Node"], n["Node"]["Meta"], n["Service"]["ID"]) for n in nodes] == [("rds-1", {"zone": "a"}, "db-ext")]

    stale = put(agent, [{"Service": {"Verb": "cas", "Node": "rds-1",
                                     "Service": {"ID": "db-ext", "Service": "db", "Port": 1, "ModifyIndex": 1}}}])
    assert stale.json()["Errors"][0]["What"] == 'failed to set service "db-ext" on node "rds-1", index is stale'
    moved = c.txn.put([{"Service": {"Verb": "cas", "Node": "rds-1", "Service": {
        "ID": "db-ext", "Service": "db", "Port": 6432, "ModifyIndex": service["ModifyIndex"]}}}])
    assert moved["Results"][0]["Service"]["Port"] == 6432
    missing = put(agent, [{"Service": {"Verb": "set", "Node": "nowhere", "Service": {"ID": "x", "Service": "x"}}},
                          {"Check": {"Verb": "set", "Check": {"Node": "rds-1", "CheckID": "c", "ServiceID": "nope"}}}])
    assert [e["What"] for e in missing.json()["Errors"]] == ["Missing node registration", "Missing service registration"]

    c.txn.put([{"Node": {"Verb": "delete", "Node": {"Node": "rds-1"}}}])
    assert c.health.service("db")[1] == [] and c.catalog.node("rds-1")[1] is None
    assert c.kv.get("db/endpoint")[1]["Value"] == b"10.9.9.9:5432"


def test_a_failing_catalog_write_leaves_the_keys_unwritten(agent):
    c = agent.client()
    refused = put(agent, [kv("set", "never", "x"), {"Node": {"Verb": "set", "Node": {"Node": "n1", "Address": "10.0.0.1"}}},
                          {"Node": {"Verb": "delete-cas", "Node": {"Node": "n1", "ModifyIndex": 1}}}])
    assert refused.status_code == 409
    assert refused.json()["Errors"] == [{"OpIndex": 2, "What": 'failed to delete node "n1", index is stale'}]
    assert c.kv.get("never")[1] is None and c.catalog.node("n1")[1] is None


def test_a_session_deleted_in_a_transaction_releases_its_locks_there(agent):
    """The keys a session holds are released (or deleted, by its Behavior) in the same transaction,
    and a lock later in it cannot use the ended session."""
    c = agent.client()
    releasing = c.session.create(lock_delay=0)
    deleting = c.session.create(lock_delay=0, behavior="delete")
    assert c.kv.put("leader", "me", acquire=releasing) and c.kv.put("ephemeral", "me", acquire=deleting)
    refused = put(agent, [{"Session": {"Verb": "delete", "Session": {"ID": releasing}}}, kv("lock", "x", "v", Session=releasing)])
    assert refused.json()["Errors"] == [{"OpIndex": 1, "What": f'invalid session "{releasing}"'}]
    assert c.session.info(releasing)[1] is not None  # nothing of the refused transaction happened
    c.txn.put([{"Session": {"Verb": "delete", "Session": {"ID": releasing}}},
               {"Session": {"Verb": "delete", "Session": {"ID": deleting}}},
               {"Session": {"Verb": "delete", "Session": {"ID": "00000000-0000-0000-0000-0000000000aa"}}}])
    assert c.session.info(releasing)[1] is None and c.session.info(deleting)[1] is None
    leader = c.kv.get("leader")[1]
    assert leader["Value"] == b"me" and leader.get("Session") is None
    assert c.kv.get("ephemeral")[1] is None
    other = c.session.create(lock_delay=0)
    assert c.kv.put("leader", "them", acquire=other)


def test_catalog_and_session_operations_obey_acls(make_agent):
    agent = make_agent(token=TOKEN)
    c = agent.client(token=TOKEN)
    c.catalog.register("rds-1", "10.9.9.9", service={"Service": "db", "ID": "db-ext", "Port": 5432})
    sid = c.session.create(lock_delay=0)
    token = client_with_rules(agent, TOKEN, "db-only", 'node_prefix "" { policy = "write" }\n'
                              'service "db" { policy = "write" }').token
    refused = put(agent, [{"Service": {"Verb": "set", "Node": "rds-1", "Service": {"ID": "web", "Service": "web"}}},
                          {"Session": {"Verb": "delete", "Session": {"ID": sid}}}], token=token)
    assert [e["OpIndex"] for e in refused.json()["Errors"]] == [0, 1]
    assert all("Permission denied" in e["What"] for e in refused.json()["Errors"])
    assert put(agent, [{"Service": {"Verb": "set", "Node": "rds-1", "Service": {"ID": "db-ext", "Service": "db",
                                                                                 "Port": 6543}}}], token=token).status_code == 200


def test_a_catalog_transaction_survives_sigkill(make_agent):
    agent = make_agent()
    c = agent.client()
    c.txn.put([{"Node": {"Verb": "set", "Node": {"Node": "rds-1", "Address": "10.9.9.9"}}},
               {"Service": {"Verb": "set", "Node": "rds-1", "Service": {"ID": "db-ext", "Service": "db", "Port": 5432}}}])
    before = c.health.service("db")[1]
    agent.kill()
    agent.start()
    assert agent.client().health.service("db")[1] == before
