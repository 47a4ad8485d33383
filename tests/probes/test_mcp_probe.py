"""The MCP probe against real servers on 127.0.0.1: an official-SDK MCP server in its own venv, a plain
HTTP server, a port nobody listens on and a server that accepts TCP but never answers."""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from meshspec.runtime.probes import McpResult, probe_mcp
from meshspec.runtime.probes.cli import probe_app
from meshspec.runtime.probes.mcp import (
    CLIENT_PROTOCOL_VERSION,
    KeptSession,
    _sse_data,
    accepts_protocol_version,
    normalize_url,
)
from tests.probes.mcp_servers import ServerProcess, mcp_python  # noqa: F401 (a fixture)
from tests.support import free_port


@pytest.fixture(scope="module")
def servers(mcp_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    """All the servers of this module, started at once (the SDK's import time is paid in parallel)."""
    logs = tmp_path_factory.mktemp("probe-servers")
    procs = {
        # SSE answers, 7 tools served 3 per page, and room for ONE session: a leaked session makes
        # the next probe fail with HTTP 503.
        "sse": ServerProcess(mcp_python, "mcp_server.py", "--tools", "7", "--page-size", "3",
                             "--max-sessions", "1", log_dir=logs),
        # JSON answers, negotiating 2024-11-05 as the older servers of the mesh do.
        "json_2024": ServerProcess(mcp_python, "mcp_server.py", "--tools", "2", "--json-response",
                                   "--answer-version", "2024-11-05", log_dir=logs),
        # An MCP server without a tools/list handler: tools/list answers a JSON-RPC error.
        "no_tools": ServerProcess(mcp_python, "mcp_server.py", "--no-tools-handler", log_dir=logs),
        "plain": ServerProcess(Path(sys.executable), "plain_http.py", log_dir=logs),
        "silent": ServerProcess(Path(sys.executable), "plain_http.py", "--silent", log_dir=logs),
    }
    try:
        for proc in procs.values():
            proc.start()
        for proc in procs.values():
            proc.wait_listening()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


# --- a real MCP server ---------------------------------------------------------------------------


@pytest.mark.integration
def test_probe_completes_handshake_lists_all_pages_and_ends_its_session(servers):
    server = servers["sse"]
    assert server.live_sessions() == 0

    result = probe_mcp(server.url)

    assert result.ok, result.reason
    assert result.protocol_version == CLIENT_PROTOCOL_VERSION
    assert result.server_name == "probe-test-server"
    assert result.tool_count == 7  # three pages: 3 + 3 + 1
    assert result.tools == tuple(f"tool_{i:02d}" for i in range(7))
    assert result.step is None
    assert re.fullmatch(r"probe-test-server protocol 2025-11-25, 7 tools in \d+ ms", result.reason)
    assert server.live_sessions() == 0


@pytest.mark.integration
def test_a_handshake_only_probe_names_the_server_lists_nothing_and_ends_its_session(servers):
    server = servers["sse"]

    result = probe_mcp(server.url, min_tools=100, list_tools=False)  # min_tools applies to a listing only

    assert result.ok, result.reason
    assert result.server_name == "probe-test-server" and result.tool_count is None and result.tools == ()
    assert re.fullmatch(r"probe-test-server protocol 2025-11-25, handshake in \d+ ms", result.reason)
    assert server.live_sessions() == 0


@pytest.mark.integration
def test_repeated_probes_leak_no_session(servers):
    """The server admits one session at a time: 20 probes in a row pass only if each one ends its session."""
    server = servers["sse"]
    elapsed = []
    for _ in range(20):
        result = probe_mcp(server.url)
        assert result.ok, result.reason
        elapsed.append(result.elapsed_ms)
    assert server.live_sessions() == 0
    print(f"\nprobe latency over 20 probes: median {statistics.median(elapsed):.1f} ms, "
          f"min {min(elapsed):.1f} ms, max {max(elapsed):.1f} ms")
    assert statistics.median(elapsed) < 1000


@pytest.mark.integration
def test_session_count_is_observable_and_a_full_server_is_reported(servers):
    """Proves the observation above is real: a session left open shows, and the next probe is refused."""
    server = servers["sse"]
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": CLIENT_PROTOCOL_VERSION, "capabilities": {},
                       "clientInfo": {"name": "leaky-test-client", "version": "0"}}}
    with httpx.Client(trust_env=False, timeout=5) as client:
        with client.stream("POST", server.url, json=init, headers=headers) as response:
            assert response.status_code == 200
            session_id = response.headers["mcp-session-id"]
        try:
            assert server.live_sessions() == 1

            result = probe_mcp(server.url)

            assert not result.ok
            assert result.step == "initialize"
            assert result.reason == (f"127.0.0.1:{server.port} refused initialize with HTTP 503: "
                                     f"JSON-RPC error -32603 Too many open sessions")
        finally:
            client.delete(server.url, headers={**headers, "Mcp-Session-Id": session_id})
    assert server.live_sessions() == 0
    assert probe_mcp(server.url).ok


@pytest.mark.integration
def test_json_responses_and_protocol_2024_11_05_are_accepted(servers):
    server = servers["json_2024"]
    result = probe_mcp(server.url)
    assert result.ok, result.reason
    assert result.protocol_version == "2024-11-05"
    assert result.tool_count == 2
    assert server.live_sessions() == 0


@pytest.mark.integration
def test_too_few_tools_fails_and_still_ends_the_session(servers):
    server = servers["json_2024"]
    result = probe_mcp(server.url, min_tools=3)
    assert not result.ok
    assert result.reason == f"127.0.0.1:{server.port} lists 2 tools, fewer than the 3 required"
    assert result.tool_count == 2 and result.protocol_version == "2024-11-05"
    assert server.live_sessions() == 0


@pytest.mark.integration
def test_json_rpc_error_is_reported_with_its_step(servers):
    server = servers["no_tools"]
    result = probe_mcp(server.url)
    assert not result.ok
    assert result.step == "tools/list"
    assert result.reason.startswith(f"127.0.0.1:{server.port} tools/list failed: JSON-RPC error -32601")
    assert server.live_sessions() == 0


# --- a session kept across probes (the checker's) ------------------------------------------------


KEPT = r"probe-test-server protocol 2025-11-25, 7 tools in \d+ ms on the session kept since \d\d:\d\d:\d\dZ"


@pytest.mark.integration
def test_a_kept_session_is_opened_once_listed_on_each_probe_and_ended_by_close(servers):
    server = servers["sse"]  # room for one session: a second one would be refused with HTTP 503
    kept = KeptSession(server.url)
    try:
        first = kept.probe()
        assert first.ok, first.reason
        assert re.fullmatch(r"probe-test-server protocol 2025-11-25, 7 tools in \d+ ms on a new session", first.reason)
        for _ in range(5):
            again = kept.probe()
            assert again.ok, again.reason
            assert re.fullmatch(KEPT, again.reason)
            assert again.tools == first.tools  # every page, on every probe
        assert server.live_sessions() == 1
        assert probe_mcp(server.url).step == "initialize"  # the server really holds the kept session
    finally:
        kept.close()
    assert server.live_sessions() == 0
    assert probe_mcp(server.url).ok


@pytest.mark.integration
def test_a_kept_session_follows_a_restart_and_fails_a_liar_on_the_port(mcp_python, tmp_path):
    """The server restarts (its sessions are gone): the next probe passes on a new session. Then a
    plain HTTP server takes the port: the kept session fails, and so does the fresh handshake."""
    server = ServerProcess(mcp_python, "mcp_server.py", "--tools", "7", log_dir=tmp_path).start().wait_listening()
    kept = KeptSession(server.url)
    try:
        assert kept.probe().ok and re.fullmatch(KEPT, kept.probe().reason)
        server.stop()
        restarted = ServerProcess(mcp_python, "mcp_server.py", "--tools", "7", log_dir=tmp_path, port=server.port)
        restarted.start().wait_listening()
        try:
            result = kept.probe()
            assert result.ok, result.reason
            assert result.reason.endswith(" on a new session")
            assert restarted.live_sessions() == 1
        finally:
            restarted.stop()
        liar = ServerProcess(Path(sys.executable), "plain_http.py", log_dir=tmp_path, port=server.port)
        liar.start().wait_listening()
        try:
            result = kept.probe()
            assert not result.ok
            assert result.reason == f"127.0.0.1:{server.port} answers HTTP 404 but not MCP initialize"
            assert not kept.probe().ok
        finally:
            liar.stop()
    finally:
        kept.close()
        server.stop()


@pytest.mark.integration
def test_a_kept_session_on_a_server_that_stops_answering_fails_within_the_timeout(servers):
    server = servers["silent"]  # never issues a session: every probe is a handshake, and each times out
    kept = KeptSession(server.url)
    try:
        started = time.monotonic()
        result = kept.probe(timeout=1.0)
        assert not result.ok and result.step == "initialize"
        assert time.monotonic() - started < 1.5
    finally:
        kept.close()


# --- things that are not MCP servers -------------------------------------------------------------


@pytest.mark.integration
def test_plain_http_server_answers_http_but_not_mcp(servers):
    server = servers["plain"]
    assert httpx.get(f"http://127.0.0.1:{server.port}/health", trust_env=False).status_code == 200

    result = probe_mcp(server.url)

    assert not result.ok
    assert result.reason == f"127.0.0.1:{server.port} answers HTTP 404 but not MCP initialize"
    assert result.step == "initialize"
    assert result.protocol_version is None and result.tool_count is None


@pytest.mark.integration
def test_http_200_that_is_not_json_rpc(servers):
    server = servers["plain"]
    result = probe_mcp(f"http://127.0.0.1:{server.port}/health")
    assert not result.ok
    assert result.reason == (f"127.0.0.1:{server.port} answers HTTP 200 but not MCP initialize: "
                             f"body is not JSON-RPC (text/plain: 'ok')")


def test_nothing_listening_is_connection_refused():
    port = free_port()
    result = probe_mcp(f"http://127.0.0.1:{port}/mcp", timeout=2)
    assert not result.ok
    assert result.reason == f"127.0.0.1:{port} refused the connection (initialize)"
    assert result.step == "connect"
    assert result.elapsed_ms < 2000


@pytest.mark.integration
def test_server_that_never_answers_times_out_within_the_timeout(servers):
    server = servers["silent"]
    started = time.monotonic()
    result = probe_mcp(server.url, timeout=1.0)
    took = time.monotonic() - started
    assert not result.ok
    assert result.reason == f"127.0.0.1:{server.port} timed out after 1 s waiting for initialize"
    assert result.step == "initialize"
    assert 1.0 <= took < 1.5


# --- the command ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_cli_ok_line_and_exit_0(servers):
    result = CliRunner().invoke(probe_app, ["mcp", servers["sse"].url, "--min-tools", "7"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"ok: probe-test-server protocol 2025-11-25, 7 tools in \d+ ms\n", result.output)


@pytest.mark.integration
def test_cli_reason_and_exit_2(servers):
    server = servers["plain"]
    result = CliRunner().invoke(probe_app, ["mcp", f"127.0.0.1:{server.port}", "--timeout", "2"])
    assert result.exit_code == 2
    assert result.output == f"127.0.0.1:{server.port} answers HTTP 404 but not MCP initialize\n"


@pytest.mark.integration
def test_cli_json(servers):
    result = CliRunner().invoke(probe_app, ["mcp", servers["sse"].url, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True and data["tool_count"] == 7 and data["protocol_version"] == "2025-11-25"
    assert set(data) == {f.name for f in McpResult.__dataclass_fields__.values()}


def test_cli_registers_as_a_subcommand_group():
    import typer

    app = typer.Typer()
    app.command("other")(lambda: None)
    app.add_typer(probe_app, name="probe")
    port = free_port()
    result = CliRunner().invoke(app, ["probe", "mcp", f"http://127.0.0.1:{port}/mcp"])
    assert result.exit_code == 2
    assert "refused the connection" in result.output


# --- pure helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"])
def test_accepted_protocol_versions(version):
    assert accepts_protocol_version(version)


@pytest.mark.parametrize("version", ["2024-10-07", "", None, "zzz", "1.0", 20250326])
def test_rejected_protocol_versions(version):
    assert not accepts_protocol_version(version)


def test_normalize_url():
    assert normalize_url("127.0.0.1:18931") == "http://127.0.0.1:18931/mcp"
    assert normalize_url("http://127.0.0.1:18931") == "http://127.0.0.1:18931/mcp"
    assert normalize_url("http://127.0.0.1:18931/custom") == "http://127.0.0.1:18931/custom"


def test_sse_data_joins_data_lines_per_event():
    lines = ["event: message", "data: {\"a\":", "data: 1}", "", ": comment", "id: 7", "data:{}", ""]
    assert list(_sse_data(iter(lines), lambda: None)) == ['{"a":\n1}', "{}"]
