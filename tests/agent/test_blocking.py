"""Blocking queries: wake promptly on a relevant change, otherwise hold for the full wait."""

from __future__ import annotations

import threading
import time

import consul
import pytest

pytestmark = pytest.mark.integration
# The watchers wait 10 s: one back within 2 s of the change was woken by it, not by its wait running
# out. Wake latency itself is a speed figure (bench/agent.py), not a unit test's: CI machines are noisy.
WATCH_WAIT = "10s"
WAKE_BUDGET = 2.0


def watch_in_background(call):
    """Run a blocking py-consul call in a thread; returns (thread, result dict with 'at' and 'value')."""
    result: dict = {}

    def run():
        result["value"] = call()
        result["at"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_health_watch_wakes_on_registration(agent):
    c = agent.client()
    index, entries = c.health.service("web")
    assert entries == []
    thread, result = watch_in_background(lambda: c.health.service("web", index=index, wait=WATCH_WAIT))
    time.sleep(0.5)
    assert thread.is_alive()
    changed_at = time.monotonic()
    c.agent.service.register("web", service_id="web-1", port=80)
    thread.join(10)
    new_index, entries = result["value"]
    assert result["at"] - changed_at < WAKE_BUDGET
    assert int(new_index) > int(index) and entries[0]["Service"]["ID"] == "web-1"


def test_kv_watch_wakes_on_put_and_ignores_other_keys(agent):
    c = agent.client()
    c.kv.put("app/config", "v1")
    index, _ = c.kv.get("app/config")
    thread, result = watch_in_background(lambda: c.kv.get("app/config", index=index, wait=WATCH_WAIT))
    time.sleep(0.3)
    c.kv.put("other/key", "x")  # unrelated: must not wake the watcher
    time.sleep(0.3)
    assert thread.is_alive()
    changed_at = time.monotonic()
    c.kv.put("app/config", "v2")
    thread.join(10)
    assert result["at"] - changed_at < WAKE_BUDGET
    assert result["value"][1]["Value"] == b"v2"


def test_watch_without_change_waits_full_wait(agent):
    c = agent.client()
    c.agent.service.register("db", service_id="db")
    index, _ = c.health.service("db")
    started = time.monotonic()
    new_index, _ = c.health.service("db", index=index, wait="1s")
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.0 + 1.0 / 16 + 1.5  # held the wait (+ Consul's jitter), then answered
    assert new_index == index


def test_wait_in_milliseconds_like_prometheus(agent):
    c = agent.client()
    index, _ = c.catalog.services()
    started = time.monotonic()
    c.catalog.services(index=index, wait="1500ms")
    assert 1.5 <= time.monotonic() - started < 3.5


def test_check_status_change_wakes_but_output_changes_do_not(agent, target, wait_until):
    c = agent.client()
    c.agent.service.register("web", service_id="web", check=consul.Check.http(target.url, interval="1s"))
    wait_until(lambda: c.agent.checks()["service:web"]["Status"] == "passing", 8)
    index, _ = c.health.service("web")
    target.body = b"changing"  # output changes on every probe; status stays passing
    started = time.monotonic()
    same_index, _ = c.health.service("web", index=index, wait="2s")
    assert time.monotonic() - started >= 2.0 and same_index == index
    thread, result = watch_in_background(lambda: c.health.service("web", index=index, wait="10s"))
    target.status = 500
    thread.join(10)
    assert result["value"][1][0]["Checks"][-1]["Status"] == "critical"


def test_index_header_on_missing_key(agent):
    # py-consul raises without X-Consul-Index, even on a KV 404: this must return (index, None).
    index, value = agent.client().kv.get("does/not/exist")
    assert value is None and int(index) >= 1
