"""/v1/snapshot through py-consul: one agent's state saved, restored into a fresh agent that then
answers the same catalog, KV, sessions, intentions and ACL tokens; a damaged archive changes nothing."""

from __future__ import annotations

import gzip
import io
import tarfile
import threading
import time

import consul
import pytest
import requests

pytestmark = pytest.mark.integration

TOKEN = "snapshot-test-management-token"
RESTORED_KEYS = 8_000  # enough that a restore takes tens of milliseconds, a window to SIGKILL in


def fill(c: consul.Consul) -> str:
    c.agent.service.register("web", service_id="web-1", port=8080, tags=["v1"], check=consul.Check.ttl("60s"))
    c.agent.check.ttl_pass("service:web-1")
    c.kv.put("cfg/a", b"\x00binary\xff", flags=3)
    c.kv.put("cfg/b", "text")
    c.kv.put("cfg/gone", "x")
    c.kv.delete("cfg/gone")
    sid = c.session.create(name="holder", lock_delay=0)
    assert c.kv.put("cfg/lock", "held", acquire=sid)
    assert c.connect.intentions.upsert("web", "db", action="allow")
    return sid


def picture(c: consul.Consul) -> dict:
    """What a client sees: catalog, health, KV (values, flags, indexes, locks), sessions."""
    _, kv = c.kv.get("", recurse=True)
    return {
        "services": c.catalog.services()[1],
        "web": [(e["Service"]["ID"], e["Service"]["Port"], e["Service"]["Tags"], [ch["Status"] for ch in e["Checks"]])
                for e in c.health.service("web")[1]],
        "kv": [(e["Key"], e["Value"], e["Flags"], e["LockIndex"], e.get("Session"), e["ModifyIndex"]) for e in kv],
        "sessions": [(s["ID"], s["Name"]) for s in c.session.list()[1]],
        "intentions": [(i["SourceName"], i["DestinationName"], i["Action"]) for i in c.connect.intentions.list()],
    }


def test_a_snapshot_restored_into_a_fresh_agent_answers_the_same(make_agent):
    source = make_agent(token=TOKEN, name="source")
    c = source.client(token=TOKEN)
    sid = fill(c)
    reader_policy = c.acl.policy.create("cfg-reader", rules={"key_prefix": {"cfg/": {"policy": "read"}}})
    reader_secret = c.acl.token.create(policies_id=[reader_policy["ID"]])["SecretID"]
    before = picture(c)
    data = c.snapshot.save()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        assert sorted(tar.getnames()) == ["SHA256SUMS", "meta.json", "state.json"]

    fresh = make_agent(token=TOKEN, name="fresh")
    f = fresh.client(token=TOKEN)
    f.kv.put("only/in/fresh", "replaced by the restore")
    assert f.snapshot.restore(data) is True
    assert picture(f) == before
    # ...and the same ACL state: the token minted on the source reads what its policy grants.
    reader = fresh.client(token=reader_secret)
    assert reader.kv.get("cfg/b")[1]["Value"] == b"text"
    with pytest.raises(consul.ACLPermissionDenied):
        reader.kv.put("cfg/b", "no")
    assert f.kv.get("cfg/lock")[1]["Session"] == sid
    assert f.kv.put("cfg/lock", "again", acquire=sid) is True  # the restored session still holds it
    acknowledged = picture(f)

    fresh.kill()  # what was restored, and written after, survives SIGKILL
    fresh.start()
    assert picture(fresh.client(token=TOKEN)) == acknowledged


def test_a_damaged_or_foreign_archive_is_refused_and_changes_nothing(make_agent):
    agent = make_agent(token=TOKEN)
    c = agent.client(token=TOKEN)
    fill(c)
    before = picture(c)
    good = c.snapshot.save()
    raw = gzip.decompress(good)
    tampered = gzip.compress(raw.replace(b'"cfg/b"', b'"cfg/X"'))
    for body, reason in ((b"not an archive", "not a snapshot archive"),
                         (tampered, "state.json does not match its SHA-256 in SHA256SUMS")):
        answer = requests.put(f"http://{agent.address}/v1/snapshot", data=body, headers={"X-Consul-Token": TOKEN},
                              timeout=5)
        assert answer.status_code == 500 and reason in answer.text, answer.text
    assert picture(c) == before


def test_snapshots_need_a_management_token(make_agent):
    agent = make_agent(token=TOKEN)
    assert requests.get(f"http://{agent.address}/v1/snapshot", timeout=5).status_code == 403
    assert requests.put(f"http://{agent.address}/v1/snapshot", data=b"x", timeout=5).status_code == 403


def test_sigkill_during_a_restore_leaves_the_old_state_or_the_new_one_whole(make_agent):
    """A restore is one SQLite transaction: an agent SIGKILLed while it restores comes back with what
    it had before, or, once the restore was acknowledged, with everything the snapshot holds."""
    source = make_agent(token=TOKEN, name="source")
    s = source.client(token=TOKEN)
    for n in range(0, RESTORED_KEYS, 50):
        _txn(source, [{"KV": {"Verb": "set", "Key": f"new/{n + i:05}", "Value": "bmV3"}} for i in range(50)])
    data = s.snapshot.save()
    target = make_agent(token=TOKEN, name="target")
    url = f"http://{target.address}/v1/snapshot"
    outcomes = []
    for delay in (0.0, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.5):
        t = target.client(token=TOKEN)
        t.kv.delete("", recurse=True)
        _txn(target, [{"KV": {"Verb": "set", "Key": f"old/{i}", "Value": "b2xk"}} for i in range(40)])
        answer: dict = {}
        restore = threading.Thread(target=lambda: answer.update(r=_put(url, data)))
        restore.start()
        time.sleep(delay)
        target.kill()
        restore.join(10)
        target.start()
        _, kv = target.client(token=TOKEN).kv.get("", recurse=True, keys=True)
        prefixes = {k.split("/")[0] for k in kv or []}
        acknowledged = answer.get("r") == 200
        if acknowledged or prefixes == {"new"}:
            assert kv == [f"new/{n:05}" for n in range(RESTORED_KEYS)], f"after {delay}s: {len(kv)} keys, {sorted(prefixes)}"
        else:
            assert kv == sorted(f"old/{i}" for i in range(40)), f"after {delay}s: {len(kv or [])} keys, {sorted(prefixes)}"
        outcomes.append("new" if prefixes == {"new"} else "old")
    # kills from before the restore began to after it was written: some must leave each state
    assert {"old", "new"} <= set(outcomes), f"every kill left the {outcomes[0]} state: none fell near a restore"


def _txn(agent, ops: list[dict]) -> None:
    """py-consul's txn.put sends no token: the request, as Consul's API documents it."""
    answer = requests.put(f"http://{agent.address}/v1/txn", json=ops, headers={"X-Consul-Token": TOKEN}, timeout=10)
    assert answer.status_code == 200, answer.text


def _put(url: str, data: bytes) -> int | None:
    try:
        return requests.put(url, data=data, headers={"X-Consul-Token": TOKEN}, timeout=10).status_code
    except requests.RequestException:
        return None  # killed before it answered: not acknowledged
