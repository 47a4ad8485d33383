"""`meshspec agent`: run the embedded Consul-compatible agent in the foreground."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
from pathlib import Path
from typing import Annotated, Optional

import typer

from meshspec.common.durations import parse_duration
from meshspec.runtime.agent.core import Config


def agent_command(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where services, checks and KV are kept.")],
    bind: Annotated[str, typer.Option("--bind", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP API port.")] = 8500,
    node_name: Annotated[Optional[str], typer.Option("--node-name", help="Node name (default: the hostname).")] = None,
    datacenter: Annotated[str, typer.Option("--datacenter", help="Datacenter name.")] = "dc1",
    token: Annotated[
        Optional[str],
        typer.Option("--token", envvar="MESH_AGENT_TOKEN", help="Management token; without one ACLs are off."),
    ] = None,
    token_file: Annotated[
        Optional[Path],
        typer.Option("--token-file", help="Read the management token from this file (keeps it out of `ps`)."),
    ] = None,
    enable_script_checks: Annotated[
        bool, typer.Option("--enable-script-checks", help="Allow checks that run commands (Args).")
    ] = False,
    token_min_expiration_ttl: Annotated[
        str, typer.Option("--acl-token-min-expiration-ttl", help="Shortest lifetime a token may be given (Consul's default).")
    ] = "1m",
    token_max_expiration_ttl: Annotated[
        str, typer.Option("--acl-token-max-expiration-ttl", help="Longest lifetime a token may be given (Consul's default).")
    ] = "24h",
) -> None:
    """Run a single-node agent that speaks Consul's HTTP API."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if token_file is not None:
        if token:
            raise typer.BadParameter("give --token or --token-file, not both")
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            typer.echo(f"meshspec agent: cannot read the token file: {exc}", err=True)
            raise typer.Exit(1) from None
        if not token:  # ACLs never switch off because a token file came out empty
            typer.echo(f"meshspec agent: the token file {token_file} is empty: refusing to start without ACLs", err=True)
            raise typer.Exit(1)
    try:
        lifetimes = parse_duration(token_min_expiration_ttl), parse_duration(token_max_expiration_ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    config = Config(
        data_dir=data_dir, node_name=node_name or socket.gethostname(), datacenter=datacenter, bind=bind,
        port=port, token=token or None, enable_script_checks=enable_script_checks,
        token_min_expiration_ttl=lifetimes[0], token_max_expiration_ttl=lifetimes[1],
    )
    from meshspec.runtime.agent.app import serve  # aiohttp is imported only when the agent actually runs

    try:
        asyncio.run(serve(config))
    except (OSError, sqlite3.Error) as exc:
        typer.echo(f"meshspec agent: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
