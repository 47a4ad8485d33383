"""`meshspec-probe`: the probe as Consul runs it (an Args check, a new process every interval).

It imports only the probe and httpx, not the CLI, the spec models or pyinfra, to keep each
check cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from meshspec.runtime.probes.mcp import McpResult, probe_mcp

UNHEALTHY = 2


def report(result: McpResult, as_json: bool) -> int:
    """Print a probe result (JSON, or one line); the exit code Consul reads: 0 passing, 2 critical."""
    if as_json:
        print(json.dumps(dataclasses.asdict(result)))
    elif result.ok:
        print(f"ok: {result.reason}")
    else:
        print(result.reason, file=sys.stderr)
    return 0 if result.ok else UNHEALTHY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meshspec-probe", description="Protocol-level health probes.")
    kinds = parser.add_subparsers(dest="kind", required=True)
    mcp = kinds.add_parser("mcp", help="MCP handshake + tools/list, then end the session.")
    mcp.add_argument("url")
    mcp.add_argument("--timeout", type=float, default=5.0)
    mcp.add_argument("--min-tools", type=int, default=1)
    mcp.add_argument("--json", action="store_true", dest="as_json")
    args = parser.parse_args(argv)
    return report(probe_mcp(args.url, timeout=args.timeout, min_tools=args.min_tools), args.as_json)
