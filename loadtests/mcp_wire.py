"""MCP's streamable HTTP as the Locust users speak it: the headers a POST carries, the initialize
request, and the JSON-RPC reply with a given id in an answer (JSON or an SSE stream)."""

from __future__ import annotations

import json

ACCEPT = "application/json, text/event-stream"
PROTOCOL_VERSION = "2025-06-18"


def initialize(client_name: str) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                       "clientInfo": {"name": client_name, "version": "1"}}}


def post_headers(**extra: str) -> dict[str, str]:
    return {"Accept": ACCEPT, "Content-Type": "application/json", **extra}


def reply(content_type: str, text: str, rpc_id: object) -> dict | None:
    """The JSON-RPC message with id `rpc_id` in an answer's body; None when there is none."""
    try:
        if content_type.startswith("application/json"):
            body = json.loads(text)
            messages = body if isinstance(body, list) else [body]
        else:
            messages = [json.loads(line[5:]) for line in text.splitlines()
                        if line.startswith("data:") and line[5:].strip().startswith("{")]
    except ValueError:
        return None
    return next((m for m in messages if isinstance(m, dict) and m.get("id") == rpc_id), None)
