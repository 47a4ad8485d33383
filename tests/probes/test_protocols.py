"""Every probe kind the checker runs refuses the seed's liar: a listener that answers anything
with `{"status":"healthy"}` (the netcat loop the old status report called an MCP server), and a
closed port. What passes them for real is the mesh itself: the acceptance suites require every
instance's check, renewed by these probes, to pass."""

from __future__ import annotations

import dataclasses
import sys
import time

import pytest

from meshspec.render.probes import AMQP, COMMAND, HTTP, MCP, MYSQL, POSTGRES, REDIS, TCP, Probe
from meshspec.runtime.probes.protocols import run
from meshspec.spec.models import AmqpProbe, MysqlProbe, PostgresProbe, RedisProbe
from tests.support import free_port

OPTIONS = {POSTGRES: PostgresProbe(), MYSQL: MysqlProbe(), REDIS: RedisProbe(), AMQP: AmqpProbe()}


def protocol_probe(kind: str, port: int) -> dict:
    return dataclasses.asdict(Probe(kind, address="127.0.0.1", port=port, options=OPTIONS[kind].model_dump()))


@pytest.mark.parametrize("kind", [POSTGRES, MYSQL, REDIS, AMQP])
def test_a_protocol_probe_refuses_the_liar_and_says_where(kind, liar):
    result = run(protocol_probe(kind, liar), timeout=2)
    assert not result.ok, result.output
    assert result.output.startswith(f"{kind} 127.0.0.1:{liar} failed: "), result.output


@pytest.mark.parametrize("kind", [POSTGRES, MYSQL, REDIS, AMQP])
def test_a_protocol_probe_of_a_closed_port_fails(kind):
    port = free_port()
    result = run(protocol_probe(kind, port), timeout=2)
    assert not result.ok and f"127.0.0.1:{port} failed" in result.output, result.output


def test_the_mcp_probe_refuses_the_liar(liar):
    result = run(dataclasses.asdict(Probe(MCP, url=f"http://127.0.0.1:{liar}/mcp", min_tools=1)), timeout=2)
    assert not result.ok, result.output


def test_an_http_probe_wants_its_proof_in_the_body(liar):
    """2xx is not proof: the liar's 200 fails a probe that wants what only the service answers."""
    result = run(dataclasses.asdict(Probe(HTTP, url=f"http://127.0.0.1:{liar}/metrics", contains="pg_up 1")), timeout=2)
    assert not result.ok and result.details["http_status"] == 200, result.output
    assert result.output == (f"GET http://127.0.0.1:{liar}/metrics answered HTTP 200 OK without 'pg_up 1' in its body"
                             """ ('{"status":"healthy"}')"""), result.output


def test_http_and_tcp_probes_of_a_closed_port_fail_and_say_where():
    port = free_port()
    http = run(dataclasses.asdict(Probe(HTTP, url=f"http://127.0.0.1:{port}/health")), timeout=2)
    assert not http.ok and http.output.startswith(f"GET http://127.0.0.1:{port}/health failed: "), http.output
    closed = run(dataclasses.asdict(Probe(TCP, address="127.0.0.1", port=port)), timeout=2)
    assert not closed.ok and closed.output.startswith(f"nothing listens at 127.0.0.1:{port} ("), closed.output
    assert closed.details == {"listening": False}  # a connect that ran: verify's port-free reads it so


def test_a_command_probe_passes_on_exit_0_and_says_how_it_failed():
    ok = run(dataclasses.asdict(Probe(COMMAND, argv=(sys.executable, "-c", "print('PONG')"))), timeout=5)
    assert ok.ok and ok.output.endswith("exited 0: PONG"), ok.output
    failing = run(dataclasses.asdict(Probe(COMMAND, argv=(sys.executable, "-c", "import sys; print('no'); sys.exit(3)"))),
                  timeout=5)
    assert not failing.ok and failing.output.endswith("exited 3: no") and failing.details == {"exit_code": 3}


def test_a_step_before_the_probe_wants_its_own_proof(liar):
    """A page step (the frontend's) must hold its text too: the liar's 200 fails it, and the probe
    says which request failed."""
    page = {"method": "GET", "url": f"http://127.0.0.1:{liar}/", "headers": {}, "body": None, "contains": "<title>"}
    result = run(dataclasses.asdict(Probe(HTTP, url=f"http://127.0.0.1:{liar}/api", contains="x", before=(page,))), timeout=2)
    assert not result.ok, result.output
    assert result.output.startswith(f"GET http://127.0.0.1:{liar}/ answered HTTP 200 OK without '<title>'"), result.output


def test_an_eventual_read_gives_up_within_the_timeout_and_says_what_it_read_last(liar):
    """Phoenix queues a span before it inserts it, so its probe reads again; a liar never shows the
    nonce, and the probe ends within its timeout with the last answer."""
    eventual = Probe(HTTP, url=f"http://127.0.0.1:{liar}/v1/spans", contains='"span_id":"x"', eventually=True)
    started = time.monotonic()
    result = run(dataclasses.asdict(eventual), timeout=1.0)
    assert time.monotonic() - started < 1.5
    assert not result.ok and result.output.endswith("""without '"span_id":"x"' in its body ('{"status":"healthy"}')"""), \
        result.output
