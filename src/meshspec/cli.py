"""The `meshspec` command line.

Subcommands other than validate and deploy live in their own packages and are imported only
when they run: `meshspec verify` must not pay for the MCP SDK, aiohttp or pyinfra, and each
service started by supervisord only needs its own module.
"""

from __future__ import annotations

import importlib
from collections import Counter
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from meshspec import settings
from meshspec.converge.pyinfra_run import NothingRan, run_deploy
from meshspec.plan import make_plan
from meshspec.plan.hosts import HostsError, inventory_names
from meshspec.render.grafana import dashboard_json
from meshspec.spec import KINDS, SpecInvalid, load_spec


def _load(target: str, name: str) -> click.Command:
    module, attr = target.split(":")
    found = getattr(importlib.import_module(module), attr)
    if isinstance(found, typer.Typer):
        command = typer.main.get_command(found)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(found)
        command = typer.main.get_command(single)
    command.name = name
    return command


def lazy_group(commands: dict[str, str]) -> type[TyperGroup]:
    """A TyperGroup class serving `commands` ({name: "module:attribute"}) beside the ones defined in place."""

    class LazyGroup(TyperGroup):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return sorted({*super().list_commands(ctx), *commands})

        def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
            if name in commands:
                return _load(commands[name], name)
            return super().get_command(ctx, name)

    return LazyGroup


# `meshspec serve <name>`: the project's own services, as the spec's commands start them.
SERVICES = {
    "backend-api": "meshspec.runtime.services.backend_api:backend_api_command",
    "task-worker": "meshspec.runtime.services.task_worker:task_worker_command",
    "frontend": "meshspec.runtime.services.frontend:frontend_command",
    "mcp-http": "meshspec.runtime.services.mcp_http:mcp_http_command",
    "mcp-task-runner": "meshspec.runtime.services.mcp_task_runner:mcp_task_runner_command",
    "mcp-gateway": "meshspec.runtime.services.mcp_gateway:mcp_gateway_command",
    "embeddings": "meshspec.runtime.services.embeddings:embeddings_command",
    "semantic-search": "meshspec.runtime.services.semantic_search:semantic_search_command",
}
serve_app = typer.Typer(cls=lazy_group(SERVICES), no_args_is_help=True, add_completion=False,
                        help="Run one of meshspec's own services.")


@serve_app.callback()
def serve_group() -> None:
    """Run one of meshspec's own services (each imports only its own module)."""
    from meshspec.runtime.tracing import start  # before the service builds its app: it patches aiohttp

    start()


LAZY = {
    "agent": "meshspec.runtime.agent.cli:agent_command",
    "controller": "meshspec.runtime.proxy.controller:controller_command",
    "verify": "meshspec.verify.cli:verify_command",
    "report": "meshspec.verify.cli:report_command",
    "probe": "meshspec.runtime.probes.cli:probe_app",
    "chaos": "meshspec.chaos.cli:chaos_app",
    "cluster": "meshspec.cluster:app",
}
app = typer.Typer(cls=lazy_group(LAZY), no_args_is_help=True, add_completion=False,
                  help="Declare a service mesh, converge it, prove it.")
app.add_typer(serve_app, name="serve")

USER_ERROR = 2


def fail(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line, err=True)
    raise typer.Exit(USER_ERROR)


@app.command()
def validate(
    path: Path = typer.Argument(Path(settings.DEFAULT_SPEC), help="The spec file."),
    instances: bool = typer.Option(False, "--instances", "-i", help="List every instance with its ID and port."),
) -> None:
    """Check a spec; print its services per kind and its instances per host. Exit 2 on any problem."""
    try:
        offset = settings.port_offset()
        hosts = settings.configured_hosts()
        spec = load_spec(path, port_offset=offset, inventory=inventory_names(hosts))
    except SpecInvalid as err:
        fail(err.lines("nothing was changed"))
    except (settings.SettingsError, HostsError) as err:
        fail([f"error: {err}"])
    kinds = Counter(s.kind for s in spec.services)
    typer.echo(f"{len(spec.services)} services: " + ", ".join(f"{kinds[k]} {k}" for k in KINDS))
    plan = make_plan(spec, hosts, offset, settings.state_dir())
    replicated = [s for s in spec.services if s.replicas > 1]
    if replicated:
        typer.echo("replicas: " + ", ".join(f"{s.name} x{s.replicas}" for s in replicated))
    for host in plan.hosts:
        mine = plan.instances_on(host.name)
        groups = f" [groups: {', '.join(host.groups)}]" if host.groups else ""
        typer.echo(f"{host.name} ({host.address}){groups}: {len(mine)} instances")
        for inst in mine if instances else []:
            typer.echo(f"  {inst.id:40} {inst.address}:{inst.port}")


@app.command()
def grafana(path: Path = typer.Argument(Path(settings.DEFAULT_SPEC), help="The spec file.")) -> None:
    """Print the dashboard's panels as a Grafana dashboard (JSON to import) for the spec's mesh."""
    try:
        offset = settings.port_offset()
        hosts = settings.configured_hosts()
        spec = load_spec(path, port_offset=offset, inventory=inventory_names(hosts))
        plan = make_plan(spec, hosts, offset, settings.state_dir())
    except SpecInvalid as err:
        fail(err.lines("nothing was printed"))
    except (settings.SettingsError, HostsError) as err:
        fail([f"error: {err}"])
    typer.echo(dashboard_json(plan), nl=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def deploy(
    ctx: typer.Context,
    deploy_file: Path = typer.Argument(Path("deploys/mesh.py"), help="The pyinfra deploy to run."),
    inventory: Path = typer.Option(Path("inventory"), help="The pyinfra inventory file."),
    rolling: bool = typer.Option(False, "--rolling", help="One host at a time, the registry's first, each run "
                                 "ending when its instances pass (pyinfra --limit HOST); stops at a host that fails."),
) -> None:
    """Validate the spec, then run `pyinfra -y INVENTORY DEPLOY_FILE [pyinfra options]`.

    Fails (exit 2) on a bad spec before any host is touched, and when pyinfra converged zero hosts or operations.
    """
    try:
        hosts, offset = settings.configured_hosts(), settings.port_offset()
        spec = load_spec(settings.spec_path(), port_offset=offset, inventory=inventory_names(hosts))
        if not rolling:
            raise typer.Exit(run_deploy(deploy_file, inventory, ctx.args))
        # While a host's instances restart, the replicas on the others answer: the proxy takes the
        # restarting ones out of rotation, and the next host starts only once they pass again.
        order = make_plan(spec, hosts, offset, settings.state_dir(), external_consul=settings.consul_http_addr()).rolling_order
        for n, host in enumerate(order, 1):
            typer.echo(f"==> rolling deploy: {host.name} ({n} of {len(order)})")
            code = run_deploy(deploy_file, inventory, [*ctx.args, "--limit", host.name])
            if code:
                typer.echo(f"==> rolling deploy stopped at {host.name}; {', '.join(h.name for h in order[n:]) or 'no host'}"
                           " not deployed", err=True)
                break
    except SpecInvalid as err:
        fail(err.lines("no host was touched"))
    except (settings.SettingsError, HostsError) as err:
        fail([f"error: {err}"])
    except NothingRan as err:
        fail([f"error: {err}"])
    raise typer.Exit(code)
