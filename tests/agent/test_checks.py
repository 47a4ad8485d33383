"""Checks the agent runs itself, against a real tiny HTTP server that goes up and down."""

from __future__ import annotations

import socket
import threading
import time

import consul
import pytest

pytestmark = pytest.mark.integration


def status_of(c: consul.Consul, check_id: str) -> str:
    return c.agent.checks()[check_id]["Status"]


def becomes(c, check_id, status, wait_until, timeout=8.0):
    return wait_until(lambda: (c.agent.checks()[check_id] if status_of(c, check_id) == status else None), timeout)


def test_http_check_follows_the_endpoint_up_and_down(agent, target, wait_until):
    c = agent.client()
    c.agent.service.register("web", service_id="web", port=target.port,
                             check=consul.Check.http(target.url, interval="1s", timeout="1s"))
    assert status_of(c, "service:web") == "critical"  # Consul's initial status
    becomes(c, "service:web", "passing", wait_until)
    assert [e["Service"]["ID"] for e in c.health.service("web", passing=True)[1]] == ["web"]

    target.stop()
    check = becomes(c, "service:web", "critical", wait_until)
    assert check["Output"].startswith(f'Get "{target.url}": dial tcp 127.0.0.1:{target.port}: connect: connection refused')
    assert c.health.service("web", passing=True)[1] == []

    target.start()
    becomes(c, "service:web", "passing", wait_until)
    target.status = 429
    check = becomes(c, "service:web", "warning", wait_until)
    assert check["Output"] == f"HTTP GET {target.url}: 429 Too Many Requests Output: ok"
    target.status = 503
    becomes(c, "service:web", "critical", wait_until)


def test_http_check_sends_method_headers_and_body(agent, target, wait_until):
    c = agent.client()
    check = {"HTTP": target.url, "Method": "POST", "Header": {"X-Probe": ["yes"]}, "Body": "ping",
             "Interval": "1s", "Timeout": "500ms", "TLSSkipVerify": True}
    c.agent.check.register("probe", check, check_id="probe")
    becomes(c, "probe", "passing", wait_until)
    method, _, headers, body = target.requests[-1]
    assert (method, headers["X-Probe"], body) == ("POST", "yes", b"ping")
    assert headers["User-Agent"].startswith("Consul Health Check")


def test_http_check_output_holds_a_body_that_came_in_two_segments(agent, wait_until):
    """Consul reads the body to its end (up to OutputMaxSize): one read of what had arrived cut it."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nfirst")
                time.sleep(0.1)
                conn.sendall(b"-half")

    threading.Thread(target=answer, daemon=True).start()
    try:
        c = agent.client()
        c.agent.check.register("split", consul.Check.http(f"http://127.0.0.1:{port}/", interval="1s", timeout="1s"),
                               check_id="split")
        check = becomes(c, "split", "passing", wait_until)
        assert check["Output"].endswith("Output: first-half"), check["Output"]
    finally:
        server.close()


def test_tcp_check(agent, target, wait_until):
    c = agent.client()
    c.agent.check.register("port", consul.Check.tcp("127.0.0.1", target.port, interval="1s", timeout="1s"),
                           check_id="port")
    check = becomes(c, "port", "passing", wait_until)
    assert check["Output"] == f"TCP connect 127.0.0.1:{target.port}: Success"
    target.stop()
    check = becomes(c, "port", "critical", wait_until)
    assert "connection refused" in check["Output"]


def test_ttl_check_expires(agent, wait_until):
    c = agent.client()
    c.agent.check.register("beat", consul.Check.ttl("1s"), check_id="beat")
    c.agent.check.ttl_pass("beat", notes="alive")
    assert status_of(c, "beat") == "passing"
    check = becomes(c, "beat", "critical", wait_until, timeout=4)
    assert check["Output"] == "TTL expired"


def test_failures_before_critical_and_success_before_passing(agent, target, wait_until):
    c = agent.client()
    check = {"HTTP": target.url, "Interval": "1s", "Timeout": "1s",
             "FailuresBeforeCritical": 3, "SuccessBeforePassing": 2}
    c.agent.check.register("gated", check, check_id="gated")
    becomes(c, "gated", "passing", wait_until)
    target.stop()
    time.sleep(1.5)  # at most two failed probes so far: still below the threshold of three
    assert status_of(c, "gated") == "passing"
    becomes(c, "gated", "critical", wait_until)
    target.start()
    becomes(c, "gated", "passing", wait_until)


def test_script_checks_only_when_enabled(make_agent, wait_until):
    c = make_agent(extra=["--enable-script-checks"]).client()
    for check_id, code, status in (("ok", 0, "passing"), ("meh", 1, "warning"), ("bad", 2, "critical")):
        script = consul.Check.script(["sh", "-c", f"echo out-{check_id}; exit {code}"], "1s")
        c.agent.check.register(check_id, script, check_id=check_id, )
    for check_id, status in (("ok", "passing"), ("meh", "warning")):
        check = becomes(c, check_id, status, wait_until)
        assert check["Output"].strip() == f"out-{check_id}"
    time.sleep(1.5)
    assert c.agent.checks()["bad"]["Output"].strip() == "out-bad"
    assert status_of(c, "bad") == "critical"
