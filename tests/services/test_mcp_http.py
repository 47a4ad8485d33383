"""`meshspec serve mcp-http` as a subprocess, driven by the official MCP client against a real local origin."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from meshspec.runtime.probes.mcp import probe_mcp
from meshspec.runtime.services.mcp_http import MAX_BODY_BYTES
from tests.agent.conftest import free_port
from tests.services.mcp_support import Origin, ServerProcess, call, list_tools, origin, structured, text_of  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    proc = ServerProcess("mcp-http", tmp_path_factory.mktemp("mcp-http")).start()
    yield proc
    proc.stop()


def test_handshake_lists_the_tools_and_ends_the_session(server):
    result = probe_mcp(server.url)
    assert result.ok, result.reason
    assert set(result.tools) == {"http_request", "http_get"}
    schema = {t.name: t.input_schema for t in list_tools(server.url)}["http_request"]
    assert schema["required"] == ["url"]
    assert {"url", "method", "headers", "body", "timeout_s"} <= set(schema["properties"])


def test_get_returns_status_headers_body_and_elapsed(server, origin: Origin):
    answer = structured(call(server.url, "http_request", {"url": f"{origin.base}/text"}))
    assert answer["status"] == 200
    assert answer["headers"]["x-origin"] == "yes"
    assert answer["headers"]["content-type"].startswith("text/plain")
    assert answer["body"] == "héllo from origin"
    assert answer["body_encoding"] == "text"
    assert answer["truncated"] is False
    assert 0 < answer["elapsed_ms"] < 5000


def test_post_sends_method_headers_and_body(server, origin: Origin):
    answer = structured(call(server.url, "http_request", {
        "url": f"{origin.base}/echo", "method": "post",
        "headers": {"Content-Type": "application/json", "X-Trace": "t-1"},
        "body": '{"hello": "wörld"}',
    }))
    assert answer["status"] == 200
    import json
    echoed = json.loads(answer["body"])
    assert echoed["method"] == "POST"
    assert echoed["headers"]["x-trace"] == "t-1"
    assert echoed["body"] == '{"hello": "wörld"}'


def test_http_get_and_error_statuses_are_results_not_errors(server, origin: Origin):
    answer = structured(call(server.url, "http_get", {"url": f"{origin.base}/status/418"}))
    assert (answer["status"], answer["body"]) == (418, "as you wish")
    assert structured(call(server.url, "http_get", {"url": f"{origin.base}/missing"}))["status"] == 404


def test_binary_body_comes_back_base64(server, origin: Origin):
    answer = structured(call(server.url, "http_get", {"url": f"{origin.base}/binary"}))
    assert answer["body_encoding"] == "base64"
    assert base64.b64decode(answer["body"]) == bytes([0, 255, 254, 1, 2, 3, 128])


def test_large_body_is_truncated_to_the_documented_limit(server, origin: Origin):
    answer = structured(call(server.url, "http_get", {"url": f"{origin.base}/big"}))
    assert answer["truncated"] is True
    assert len(answer["body"]) == MAX_BODY_BYTES
    assert answer["body_bytes"] > MAX_BODY_BYTES


def test_timeout_is_a_tool_error(server, origin: Origin):
    started = time.monotonic()
    result = call(server.url, "http_request", {"url": f"{origin.base}/slow", "timeout_s": 0.5})
    assert result.is_error
    assert "timed out after 0.5 s" in text_of(result)
    assert time.monotonic() - started < origin.SLOW_S


def test_refused_connection_is_a_tool_error(server):
    closed = free_port()  # bound then released: nothing listens there
    result = call(server.url, "http_request", {"url": f"http://127.0.0.1:{closed}/"})
    assert result.is_error
    assert f"GET http://127.0.0.1:{closed}/: connection refused" in text_of(result)


@pytest.mark.parametrize("arguments, message", [
    ({"url": "ftp://example.invalid/x"}, "bad URL"),
    ({"url": "not a url"}, "bad URL"),
    ({"url": "http://127.0.0.1/", "method": "BREW"}, "unsupported method 'BREW'"),
    ({"url": "http://127.0.0.1/", "timeout_s": 0}, "timeout_s must be more than 0"),
])
def test_bad_requests_are_tool_errors(server, arguments, message):
    result = call(server.url, "http_request", arguments)
    assert result.is_error
    assert message in text_of(result)


def test_server_survives_errors(server, origin: Origin):
    call(server.url, "http_request", {"url": f"http://127.0.0.1:{free_port()}/"})
    assert probe_mcp(server.url).ok
    assert structured(call(server.url, "http_get", {"url": f"{origin.base}/text"}))["status"] == 200
    assert server.proc.poll() is None
