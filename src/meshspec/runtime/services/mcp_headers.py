"""MCP's rule for the headers intermediaries route on: `Mcp-Method` equals the JSON-RPC body's
`method`, and for `tools/call` `Mcp-Name` equals its `params.name`.

meshspec's proxy decides tool intentions on its own reading of the body (HAProxy's JSON parser) and
hands the server that reading as these headers. A body the two parsers read apart (a duplicated key:
HAProxy takes the first, Python the last) must not run a tool the proxy never saw, so the server
refuses a POST whose headers disagree with what it parsed. The mcp SDK checks this for the
2026-07-28 protocol only; this checks every POST that carries either header.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from meshspec.common.jsonrpc import HEADER_MISMATCH

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def header_mismatch(body: bytes, headers: Mapping[str, str]) -> str | None:
    """Why the routing headers disagree with the body, or None when they agree (or are absent)."""
    try:
        message = json.loads(body)
    except ValueError:
        return "the body is no JSON"
    method = message.get("method") if isinstance(message, dict) else None
    if "mcp-method" in headers and headers["mcp-method"] != method:
        return f"Mcp-Method {headers['mcp-method']!r} does not match the body's method {method!r}"
    if method == "tools/call" and "mcp-name" in headers:
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        if headers["mcp-name"] != name:
            return f"Mcp-Name {headers['mcp-name']!r} does not match the tools/call body's name {name!r}"
    return None


class HeadersMatchBody:
    """ASGI middleware: a POST carrying Mcp-Method or Mcp-Name is read whole, checked with
    `header_mismatch`, and refused with 400 (a JSON-RPC error) or replayed to the app unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if "mcp-method" not in headers and "mcp-name" not in headers:
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if (problem := header_mismatch(body, headers)) is not None:
            error = json.dumps({"jsonrpc": "2.0", "id": None,
                                "error": {"code": HEADER_MISMATCH, "message": problem}}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(error)).encode())]})
            await send({"type": "http.response.body", "body": error})
            return None
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
