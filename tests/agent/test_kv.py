"""KV semantics through py-consul: cas, flags, recurse, keys/separator, raw, delete."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_put_get_flags_and_binary(agent):
    c = agent.client()
    assert c.kv.put("bin", b"\x00\xffdata", flags=42) is True
    _, entry = c.kv.get("bin")
    assert entry["Value"] == b"\x00\xffdata" and entry["Flags"] == 42 and entry["Key"] == "bin"
    assert entry["CreateIndex"] == entry["ModifyIndex"] and entry["LockIndex"] == 0
    assert c.kv.put("empty", None) is True
    assert c.kv.get("empty")[1]["Value"] is None
    raw = c.http.get(lambda r: r, "/v1/kv/bin", params=[("raw", "1")], raw=True)
    assert raw.body == b"\x00\xffdata"


def test_cas_semantics(agent):
    c = agent.client()
    assert c.kv.put("lock", "a", cas=0) is True  # cas=0: create only if absent
    assert c.kv.put("lock", "b", cas=0) is False
    _, entry = c.kv.get("lock")
    assert c.kv.put("lock", "c", cas=entry["ModifyIndex"] + 100) is False
    assert c.kv.put("lock", "c", cas=entry["ModifyIndex"]) is True
    _, updated = c.kv.get("lock")
    assert updated["Value"] == b"c" and updated["CreateIndex"] == entry["CreateIndex"]
    assert updated["ModifyIndex"] > entry["ModifyIndex"]
    assert c.kv.put("lock", "d", cas=entry["ModifyIndex"]) is False  # stale index loses
    assert c.kv.delete("lock", cas=entry["ModifyIndex"]) is False
    assert c.kv.delete("lock", cas=updated["ModifyIndex"]) is True
    assert c.kv.get("lock")[1] is None


def test_recurse_keys_separator_and_delete_recurse(agent):
    c = agent.client()
    for key in ("cfg/a", "cfg/b/x", "cfg/b/y", "cfgother", "top"):
        c.kv.put(key, key)
    _, entries = c.kv.get("cfg/", recurse=True)
    assert [e["Key"] for e in entries] == ["cfg/a", "cfg/b/x", "cfg/b/y"]
    assert c.kv.get("cfg", keys=True)[1] == ["cfg/a", "cfg/b/x", "cfg/b/y", "cfgother"]
    assert c.kv.get("cfg/", keys=True, separator="/")[1] == ["cfg/a", "cfg/b/"]
    assert c.kv.get("", keys=True, separator="/")[1] == ["cfg/", "cfgother", "top"]
    assert c.kv.get("nothing/", recurse=True)[1] is None
    assert c.kv.delete("cfg/", recurse=True) is True
    assert c.kv.get("", keys=True)[1] == ["cfgother", "top"]
    assert c.kv.delete("missing") is True
