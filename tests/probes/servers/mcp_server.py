"""A small but real MCP server (official `mcp` SDK, Streamable HTTP) for the probe tests.

Runs in its own venv (see tests/probes/test_mcp_probe.py). Options:
  --port P            listen on 127.0.0.1:P, endpoint /mcp
  --tools N           serve N tools (`tool_00` ... ), each echoing its arguments
  --page-size K       tools/list answers K tools per page with a nextCursor (0: one page)
  --json-response     answer POSTs with application/json instead of text/event-stream
  --max-sessions M    the SDK refuses (HTTP 503) a new session while M are open
  --answer-version V  answer initialize with protocol version V (as an older server would)
  --no-tools-handler  register no tools/list handler, so tools/list answers a JSON-RPC error

GET /sessions answers {"live": <sessions the SDK's session manager is tracking>}, so a test can see
whether a client left its session behind.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def build(args: argparse.Namespace):
    tools = [
        types.Tool(
            name=f"tool_{i:02d}",
            description=f"Echo tool number {i}",
            input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
        )
        for i in range(args.tools)
    ]

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        if args.page_size <= 0:
            return types.ListToolsResult(tools=tools)
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + args.page_size
        return types.ListToolsResult(tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        text = json.dumps({"tool": params.name, "arguments": params.arguments or {}})
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    server = Server(
        "probe-test-server",
        version="1.0.0",
        on_list_tools=None if args.no_tools_handler else list_tools,
        on_call_tool=call_tool,
    )

    if args.answer_version:
        async def pin_version(ctx: Any, call_next: Any) -> Any:
            # Negotiate as a server that only speaks `answer_version` would.
            if ctx.method == "initialize" and isinstance(ctx.params, dict):
                ctx = replace(ctx, params={**ctx.params, "protocolVersion": args.answer_version})
            return await call_next(ctx)

        server.middleware.append(pin_version)

    async def sessions(request: Request) -> JSONResponse:
        return JSONResponse({"live": len(server.session_manager._server_instances)})

    return server.streamable_http_app(
        json_response=args.json_response,
        max_sessions=args.max_sessions,
        custom_starlette_routes=[Route("/sessions", sessions, methods=["GET"])],
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tools", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=0)
    parser.add_argument("--json-response", action="store_true")
    parser.add_argument("--max-sessions", type=int, default=None)
    parser.add_argument("--answer-version", default="")
    parser.add_argument("--no-tools-handler", action="store_true")
    args = parser.parse_args()
    uvicorn.run(build(args), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
