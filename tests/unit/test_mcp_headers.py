"""The task runner's check of MCP's routing headers against the JSON-RPC body. Pure."""

from __future__ import annotations

import json

import pytest

from meshspec.runtime.services.mcp_headers import header_mismatch

CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "submit_task"}}).encode()


@pytest.mark.parametrize("headers", [{}, {"mcp-method": "tools/call"}, {"mcp-method": "tools/call", "mcp-name": "submit_task"}])
def test_headers_that_agree_or_are_absent_pass(headers):
    assert header_mismatch(CALL, headers) is None


@pytest.mark.parametrize("body, headers, reason", [
    (CALL, {"mcp-method": "tools/list"}, "Mcp-Method 'tools/list' does not match the body's method 'tools/call'"),
    (CALL, {"mcp-name": "list_tasks"}, "Mcp-Name 'list_tasks' does not match the tools/call body's name 'submit_task'"),
    (b'{"method":"tools/call","method":"tools/list"}', {"mcp-method": "tools/call"},
     "Mcp-Method 'tools/call' does not match the body's method 'tools/list'"),
    (b'[{"method":"tools/call"}]', {"mcp-method": "tools/call"}, "Mcp-Method 'tools/call' does not match the body's method None"),
    (b'{"method":', {"mcp-method": "tools/call"}, "the body is no JSON"),
])
def test_headers_that_disagree_with_the_body_name_why(body, headers, reason):
    assert header_mismatch(body, headers) == reason
