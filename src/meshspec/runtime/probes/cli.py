"""`meshspec probe ...`: protocol-level health probes from the command line.

Registered by the main CLI as ``app.add_typer(probe_app, name="probe")``.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import typer

from meshspec.runtime.probes.mcp import McpResult, probe_mcp

UNHEALTHY = 2

probe_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Probe a service at the protocol level.")


def report(result: McpResult, as_json: bool) -> int:
    """Print a probe result (JSON, or one line); the exit code: 0 healthy, 2 not."""
    if as_json:
        print(json.dumps(dataclasses.asdict(result)))
    elif result.ok:
        print(f"ok: {result.reason}")
    else:
        print(result.reason, file=sys.stderr)
    return 0 if result.ok else UNHEALTHY


@probe_app.callback()
def probe_group() -> None:
    """Probe a service at the protocol level (a real handshake, not a bare HTTP 200)."""


@probe_app.command("mcp")
def probe_command(
    url: str = typer.Argument(..., help="Endpoint, e.g. http://HOST:PORT/mcp (a bare HOST:PORT gets /mcp)."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.01, help="Seconds for the whole probe."),
    min_tools: int = typer.Option(1, "--min-tools", min=0, help="Fail when the server lists fewer tools."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as one JSON object."),
) -> None:
    """MCP handshake + tools/list, then end the session. Exit 0 when healthy, 2 with the reason otherwise."""
    raise typer.Exit(report(probe_mcp(url, timeout=timeout, min_tools=min_tools), as_json))


@probe_app.command("run")
def run_command() -> None:
    """Run instances' probes here, on their host, given on stdin as JSON {name: {"probe": ...,
    "timeout": seconds}} (as `meshspec verify` renders them); print {name: result} as one JSON
    object. Exit 0 when every one passed, 2 otherwise."""
    from concurrent.futures import ThreadPoolExecutor

    from meshspec.runtime.probes.protocols import run

    try:
        wanted = {name: (asked["probe"], float(asked["timeout"])) for name, asked in json.load(sys.stdin).items()}
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        print(f"stdin holds no probes as {{name: {{probe, timeout}}}}: {err!r}", file=sys.stderr)
        raise typer.Exit(UNHEALTHY) from None
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = dict(zip(wanted, pool.map(lambda asked: run(*asked), wanted.values())))
    print(json.dumps({name: dataclasses.asdict(result) for name, result in results.items()}))
    raise typer.Exit(0 if all(r.ok for r in results.values()) else UNHEALTHY)


@probe_app.command("supervisor")
def supervisor_command(
    socket_path: str = typer.Argument(..., help="supervisord's unix socket."),
    timeout: float = typer.Option(2.0, "--timeout", min=0.01, help="Seconds for the read."),
) -> None:
    """Print supervisord's programs (getAllProcessInfo) as one JSON list: what `meshspec verify`
    reads on another host of the mesh. Exit 2 with the reason when supervisord does not answer."""
    import xmlrpc.client

    from meshspec.runtime.supervisor_rpc import supervisor_rpc

    try:
        infos = supervisor_rpc(socket_path, timeout).getAllProcessInfo()
    except (OSError, xmlrpc.client.Error) as err:
        print(f"supervisord at {socket_path} does not answer: {err or type(err).__name__}", file=sys.stderr)
        raise typer.Exit(UNHEALTHY) from None
    print(json.dumps(infos))
