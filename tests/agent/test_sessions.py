"""Sessions and KV locks through py-consul, as Consul documents them: two clients electing a leader,
lock delay, TTL expiry, invalidation by a failing check, ACLs, and locks that survive SIGKILL."""

from __future__ import annotations

import threading
import time

import consul
import pytest
import requests

from tests.support import wait_until

pytestmark = pytest.mark.integration

TOKEN = "session-test-management-token"


def test_a_session_with_defaults_reads_back_as_consul_shows_it(agent):
    c = agent.client()
    sid = c.session.create(name="leader-election", ttl=30)
    _, session = c.session.info(sid)
    assert session["ID"] == sid and session["Name"] == "leader-election" and session["Node"] == "test-node"
    assert session["LockDelay"] == 15_000_000_000 and session["Behavior"] == "release" and session["TTL"] == "30s"
    assert session["NodeChecks"] == ["serfHealth"] and session["ServiceChecks"] is None
    assert session["CreateIndex"] == session["ModifyIndex"] > 0
    assert [s["ID"] for s in c.session.list()[1]] == [sid]
    assert [s["ID"] for s in c.session.node("test-node")[1]] == [sid]
    assert c.session.node("other-node")[1] == []
    assert c.session.renew(sid)["ID"] == sid

    assert c.session.destroy(sid) is True
    assert c.session.info(sid)[1] is None
    assert requests.get(f"http://{agent.address}/v1/session/info/{sid}", timeout=5).json() == []
    renewed = requests.put(f"http://{agent.address}/v1/session/renew/{sid}", timeout=5)
    assert (renewed.status_code, renewed.text) == (404, f"Session id '{sid}' not found")


@pytest.mark.parametrize(("body", "message"), [
    ({"TTL": "5s"}, "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"),
    ({"TTL": "soon"}, "Session TTL 'soon' invalid: time: invalid duration \"soon\""),
    ({"Behavior": "keep"}, "Invalid Behavior setting 'keep'"),
    ({"Node": "elsewhere"}, "Missing node registration"),
    ({"NodeChecks": ["serfHealth", "no-such-check"]}, "Missing check 'no-such-check' registration"),
])
def test_a_bad_session_is_refused_with_consuls_message(agent, body, message):
    answer = requests.put(f"http://{agent.address}/v1/session/create", json=body, timeout=5)
    assert (answer.status_code, answer.text) == (500, message)
    assert agent.client().session.list()[1] == []


def test_two_clients_take_a_lock_in_turn(agent):
    a, b = agent.client(), agent.client()
    sa, sb = a.session.create(lock_delay=0), b.session.create(lock_delay=0)
    assert a.kv.put("service/leader", "a", acquire=sa) is True
    assert b.kv.put("service/leader", "b", acquire=sb) is False
    _, held = b.kv.get("service/leader")
    assert held["Session"] == sa and held["LockIndex"] == 1 and held["Value"] == b"a"
    assert a.kv.put("service/leader", "a2", acquire=sa) is True  # the holder writes again: same lock
    assert b.kv.get("service/leader")[1]["LockIndex"] == 1
    assert b.kv.put("service/leader", "b", release=sb) is False  # only the holder releases

    assert a.kv.put("service/leader", "a-out", release=sa) is True
    released = b.kv.get("service/leader")[1]
    assert "Session" not in released and released["Value"] == b"a-out" and released["LockIndex"] == 1
    assert b.kv.put("service/leader", "b", acquire=sb) is True
    assert b.kv.get("service/leader")[1]["LockIndex"] == 2

    unknown = requests.put(f"http://{agent.address}/v1/kv/service/leader?acquire=00000000-0000-0000-0000-000000000001",
                           data="x", timeout=5)
    assert (unknown.status_code, unknown.text) == (500, 'invalid session "00000000-0000-0000-0000-000000000001"')


def test_a_waiting_client_takes_over_when_the_leader_ends_after_the_lock_delay(agent):
    """`consul lock`'s loop: the follower blocks on the key, sees it released, and acquires it once
    the ended session's lock delay is over (a deliberate release sets no delay)."""
    leader, follower = agent.client(), agent.client()
    leading = leader.session.create(lock_delay=1)
    waiting = follower.session.create(lock_delay=0)
    assert leader.kv.put("election", "leader", acquire=leading) is True
    index, entry = follower.kv.get("election")
    assert entry["Session"] == leading

    woke: list[tuple[float, dict]] = []

    def watch() -> None:
        _, seen = follower.kv.get("election", index=index, wait="10s")
        woke.append((time.monotonic(), seen))

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.3)
    ended = time.monotonic()
    assert leader.session.destroy(leading) is True
    watcher.join(10)
    (woken_at, seen), = woke
    assert woken_at - ended < 1.0 and "Session" not in seen  # the blocking query woke on the release
    assert follower.kv.put("election", "follower", acquire=waiting) is False  # in the lock delay
    assert wait_until(lambda: follower.kv.put("election", "follower", acquire=waiting), 3)
    assert time.monotonic() - ended >= 1.0
    assert follower.kv.get("election")[1]["Session"] == waiting


def test_a_ttl_session_ends_after_twice_its_ttl_and_deletes_what_it_held(agent):
    c = agent.client()
    sid = c.session.create(ttl=10, behavior="delete", lock_delay=0)
    created = time.monotonic()
    assert c.kv.put("ephemeral/worker-1", "alive", acquire=sid) is True
    time.sleep(11)
    assert c.session.info(sid)[1] is not None  # past its TTL, inside Consul's grace of one more TTL
    assert wait_until(lambda: c.session.info(sid)[1] is None, 12, interval=0.2)
    assert time.monotonic() - created >= 19.5
    assert c.kv.get("ephemeral/worker-1")[1] is None


def test_a_session_ends_when_a_check_it_rests_on_turns_critical(agent):
    c = agent.client()
    c.agent.check.register("lease", check=consul.Check.ttl("30s"))
    created = requests.put(f"http://{agent.address}/v1/session/create", timeout=5,
                           json={"NodeChecks": ["serfHealth", "lease"]})
    assert (created.status_code, created.text) == (500, "Check 'lease' is in critical state")
    c.agent.check.ttl_pass("lease")
    sid = requests.put(f"http://{agent.address}/v1/session/create", timeout=5,
                       json={"NodeChecks": ["serfHealth", "lease"], "LockDelay": "0s"}).json()["ID"]
    assert c.kv.put("held", "x", acquire=sid) is True
    c.agent.check.ttl_warn("lease")  # warning is not critical: the session stays
    assert c.session.info(sid)[1] is not None
    c.agent.check.ttl_fail("lease")
    assert c.session.info(sid)[1] is None
    assert "Session" not in c.kv.get("held")[1]

    refused = requests.put(f"http://{agent.address}/v1/session/create", timeout=5,
                           json={"NodeChecks": [], "ServiceChecks": [{"ID": "lease"}]})
    assert (refused.status_code, refused.text) == (500, "Check 'lease' is in critical state")
    c.agent.check.ttl_pass("lease")
    sid = requests.put(f"http://{agent.address}/v1/session/create", timeout=5,
                       json={"NodeChecks": [], "ServiceChecks": [{"ID": "lease"}]}).json()["ID"]
    c.agent.check.deregister("lease")
    assert c.session.info(sid)[1] is None  # a check that goes away ends its sessions too


def test_sessions_and_locks_obey_acls(make_agent):
    agent = make_agent(token=TOKEN)
    anonymous, admin = agent.client(), agent.client(token=TOKEN)
    with pytest.raises(consul.ACLPermissionDenied):
        anonymous.session.create()
    sid = admin.session.create()
    index, listed = anonymous.session.list()
    assert listed == []  # filtered, not refused
    answer = requests.get(f"http://{agent.address}/v1/session/list", timeout=5)
    assert answer.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
    denied = requests.put(f"http://{agent.address}/v1/session/destroy/{sid}", timeout=5)
    assert denied.status_code == 403 and "session:write" in denied.text
    assert admin.session.info(sid)[1]["ID"] == sid
    unknown = requests.put(f"http://{agent.address}/v1/session/destroy/nope", headers={"X-Consul-Token": TOKEN},
                           timeout=5)
    assert (unknown.status_code, unknown.text) == (500, 'Unknown session "nope"')


def test_a_held_lock_survives_sigkill_and_a_ttl_session_gets_a_whole_ttl_again(make_agent):
    agent = make_agent()
    c = agent.client()
    sid = c.session.create(ttl=10, lock_delay=0)
    assert c.kv.put("durable/lock", "v", acquire=sid) is True
    agent.kill()
    agent.start()
    c = agent.client()
    _, entry = c.kv.get("durable/lock")
    assert entry["Session"] == sid and entry["LockIndex"] == 1 and entry["Value"] == b"v"
    assert c.session.info(sid)[1]["TTL"] == "10s"
    assert c.session.renew(sid)["ID"] == sid
