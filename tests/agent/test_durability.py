"""Acknowledged writes survive SIGKILL; checks resume after a restart."""

from __future__ import annotations

import base64
import os
import stat
import threading

import consul
import pytest
import requests

pytestmark = pytest.mark.integration


def test_sigkill_and_restart_lose_nothing(make_agent, target, wait_until):
    agent = make_agent(token="tok")
    c = agent.client(token="tok")
    for n in range(20):
        c.agent.service.register("svc", service_id=f"svc-{n}", port=1000 + n, tags=[f"t{n}"], meta={"n": str(n)})
    c.agent.service.register("web", service_id="web", port=target.port,
                             check=consul.Check.http(target.url, interval="1s", timeout="1s"))
    c.agent.check.register("beat", consul.Check.ttl("30s"), check_id="beat")
    c.agent.check.ttl_warn("beat", notes="warned")
    for n in range(50):
        c.kv.put(f"k/{n}", f"value-{n}", flags=n)
    c.kv.delete("k/0")
    wait_until(lambda: c.agent.checks()["service:web"]["Status"] == "passing", 8)
    before_index, before_kv = c.kv.get("k/", recurse=True)
    before_services, before_checks = c.agent.services(), c.agent.checks()

    agent.kill()
    target.stop()
    agent.start()

    assert c.agent.services() == before_services
    after_checks = c.agent.checks()
    assert set(after_checks) == set(before_checks)
    assert after_checks["beat"]["Status"] == "warning" and after_checks["beat"]["Output"] == "warned"
    after_index, after_kv = c.kv.get("k/", recurse=True)
    assert after_kv == before_kv and int(after_index) >= int(before_index)
    assert c.kv.get("k/0")[1] is None
    # The HTTP check's runner restarted: its target is gone now, so it must turn critical.
    wait_until(lambda: c.agent.checks()["service:web"]["Status"] == "critical", 8)
    # And the index keeps growing: new writes are newer than anything before the crash.
    c.kv.put("after", "crash")
    assert c.kv.get("after")[1]["ModifyIndex"] > int(before_index)


def test_sigterm_exits_cleanly(agent):
    assert agent.stop() == 0
    assert "ready" in agent.log()


def test_sigkill_during_a_stream_of_transactions_keeps_each_whole_or_absent(make_agent):
    """Transactions of 8 keys each, sent back to back while the agent is SIGKILLed: every one the
    agent acknowledged is there whole after the restart, and none is there in part."""
    agent = make_agent()
    url = f"http://{agent.address}/v1/txn"
    acknowledged: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        n = 0
        while not stop.is_set():
            ops = [{"KV": {"Verb": "set", "Key": f"txn/{n}/{i}", "Value": base64.b64encode(b"v").decode()}}
                   for i in range(8)]
            try:
                if requests.put(url, json=ops, timeout=2).status_code == 200:
                    acknowledged.append(n)
            except requests.RequestException:
                return  # the agent died mid-request: that one was never acknowledged
            n += 1

    writer = threading.Thread(target=stream)
    writer.start()
    while len(acknowledged) < 30:
        threading.Event().wait(0.01)
    agent.kill()
    stop.set()
    writer.join(10)
    agent.start()

    _, entries = agent.client().kv.get("txn/", recurse=True)
    keys_of: dict[int, int] = {}
    for entry in entries or []:
        n = int(entry["Key"].split("/")[1])
        keys_of[n] = keys_of.get(n, 0) + 1
    assert all(count == 8 for count in keys_of.values()), {n: c for n, c in keys_of.items() if c != 8}
    assert set(acknowledged) <= set(keys_of), sorted(set(acknowledged) - set(keys_of))


def test_the_store_that_holds_every_token_s_secret_is_the_agent_s_alone(make_agent, tmp_path):
    """Its data dir 0700, the database and SQLite's -wal and -shm 0600, also for a data dir an older
    agent left readable by everyone."""
    agent = make_agent(token="tok")
    agent.client(token="tok").acl.token.create(secret_id="11111111-2222-4333-8444-555555555555", description="x")
    agent.kill()
    os.chmod(agent.data_dir, 0o755)
    for path in agent.data_dir.glob("state.db*"):
        os.chmod(path, 0o644)
    agent.start()
    agent.client(token="tok").kv.put("after", "restart")
    assert stat.S_IMODE(agent.data_dir.stat().st_mode) == 0o700
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in agent.data_dir.glob("state.db*")}
    assert "state.db-wal" in files and set(files.values()) == {0o600}, files
