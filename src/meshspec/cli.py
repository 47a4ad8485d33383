"""The `meshspec` command line."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from meshspec import settings
from meshspec.hosts import HostsError, configured_hosts
from meshspec.lazycli import lazy_group
from meshspec.plan import make_plan
from meshspec.pyinfra_run import NothingRan, run_deploy
from meshspec.spec import KINDS, SpecInvalid, load_spec

# Imported when they run: the agent, the services and verify each need only their own modules.
LAZY = {
    "agent": "meshspec.agent.cli:agent_command",
    "controller": "meshspec.proxy.controller:controller_command",
    "verify": "meshspec.verify.cli:verify_command",
    "report": "meshspec.verify.cli:report_command",
    "probe": "meshspec.probes.cli:probe_app",
    "serve": "meshspec.services.cli:serve_app",
}
app = typer.Typer(cls=lazy_group(LAZY), no_args_is_help=True, add_completion=False,
                  help="Declare a service mesh, converge it, prove it.")

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
        hosts = configured_hosts()
        spec = load_spec(path, port_offset=offset)
    except SpecInvalid as err:
        fail([p.render(err.filename) for p in err.problems] + [f"{len(err.problems)} problem(s); nothing was changed"])
    except (settings.SettingsError, HostsError) as err:
        fail([f"error: {err}"])
    kinds = Counter(s.kind for s in spec.services)
    typer.echo(f"{len(spec.services)} services: " + ", ".join(f"{kinds[k]} {k}" for k in KINDS))
    plan = make_plan(spec, hosts, offset, settings.state_dir())
    for host in plan.hosts:
        mine = plan.instances_on(host.name)
        typer.echo(f"{host.name} ({host.address}): {len(mine)} instances")
        for inst in mine if instances else []:
            typer.echo(f"  {inst.id:40} {inst.address}:{inst.port}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def deploy(
    ctx: typer.Context,
    deploy_file: Path = typer.Argument(Path("deploys/mesh.py"), help="The pyinfra deploy to run."),
    inventory: Path = typer.Option(Path("inventory"), help="The pyinfra inventory file."),
) -> None:
    """Validate the spec, then run `pyinfra -y INVENTORY DEPLOY_FILE [pyinfra options]`.

    Fails (exit 2) on a bad spec before any host is touched, and when pyinfra converged zero hosts or operations.
    """
    try:
        load_spec(settings.spec_path(), port_offset=settings.port_offset())
        code = run_deploy(deploy_file, inventory, ctx.args)
    except SpecInvalid as err:
        fail([p.render(err.filename) for p in err.problems] + [f"{len(err.problems)} problem(s); no host was touched"])
    except settings.SettingsError as err:
        fail([f"error: {err}"])
    except NothingRan as err:
        fail([f"error: {err}"])
    raise typer.Exit(code)
