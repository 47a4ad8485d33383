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
    ca_cert: Annotated[
        Optional[Path],
        typer.Option("--ca-cert", help="The Connect CA's root certificate (PEM), with --ca-key; without both, the agent "
                                       "generates a CA and keeps it in --data-dir."),
    ] = None,
    ca_key: Annotated[
        Optional[Path], typer.Option("--ca-key", help="The Connect CA's private key (PEM, EC or RSA), with --ca-cert.")
    ] = None,
    trust_domain: Annotated[
        Optional[str],
        typer.Option("--trust-domain", help="SPIFFE trust domain of Connect certificates (default: the CA root's, "
                                            "else <cluster ID>.consul as Consul's)."),
    ] = None,
    leaf_cert_ttl: Annotated[
        str, typer.Option("--leaf-cert-ttl", help="Lifetime of the Connect leaf certificates (Consul's default).")
    ] = "72h",
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
        leaf_lifetime = parse_duration(leaf_cert_ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if leaf_lifetime < 1:
        raise typer.BadParameter(f"--leaf-cert-ttl {leaf_cert_ttl}: a leaf must live at least 1s")
    if (ca_cert is None) != (ca_key is None):
        raise typer.BadParameter("give both --ca-cert and --ca-key, or neither")
    # aiohttp and cryptography are imported only when the agent actually runs
    from meshspec.common.connect_certs import valid_trust_domain
    from meshspec.runtime.agent.app import serve
    from meshspec.runtime.agent.connect_ca import CAError

    if trust_domain is not None and not valid_trust_domain(trust_domain):
        raise typer.BadParameter(f"--trust-domain {trust_domain!r}: a SPIFFE trust domain has only lowercase letters, "
                                 "digits, dots, dashes and underscores")
    config = Config(
        data_dir=data_dir, node_name=node_name or socket.gethostname(), datacenter=datacenter, bind=bind,
        port=port, token=token or None, enable_script_checks=enable_script_checks,
        token_min_expiration_ttl=lifetimes[0], token_max_expiration_ttl=lifetimes[1],
        ca_cert=ca_cert, ca_key=ca_key, trust_domain=trust_domain, leaf_cert_ttl=leaf_lifetime,
    )
    try:
        asyncio.run(serve(config))
    except (OSError, sqlite3.Error, CAError) as exc:
        typer.echo(f"meshspec agent: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
