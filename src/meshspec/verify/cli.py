"""`meshspec verify` and `meshspec report`: is reality what the spec says, and a report of it."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path

import typer

from meshspec import settings
from meshspec.converge.mesh import configured_mesh
from meshspec.plan.hosts import HostsError
from meshspec.spec import SpecInvalid
from meshspec.verify.run import VerifyRun, verify, verify_gone

DRIFT, USER_ERROR = 1, 2


class Format(str, Enum):
    TEXT, JSON, TAP = "text", "json", "tap"


def _user_error(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line, err=True)
    raise typer.Exit(USER_ERROR)


def run_verify(gone: bool = False) -> VerifyRun:
    """Verify the mesh the settings describe (as the deploy reads them), or with `gone` that it is
    torn down; exit 2 on a bad spec or setting."""
    try:
        mesh, runtime = configured_mesh(), settings.runtime()
    except SpecInvalid as err:
        _user_error(err.lines("nothing was verified"))
    except (settings.SettingsError, HostsError) as err:
        _user_error([f"error: {err}"])
    if gone:
        return verify_gone(mesh, spec_path=settings.spec_path())
    return verify(mesh, runtime=runtime, spec_path=settings.spec_path())


def verify_command(
    output_format: Format = typer.Option(Format.TEXT, "--format",
                                      help="text: the verdict line and the failures (the table with --verbose); "
                                           "json: the whole run; tap: TAP version 14, a test point per check."),
    json_out: bool = typer.Option(False, "--json", help="The same as --format json."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="text: every check in a table, not only the failures."),
    junit: Path | None = typer.Option(None, "--junit", help="Also write JUnit XML (one testcase per check) here."),
    gone: bool = typer.Option(False, "--gone", help="Check instead that the mesh is torn down (after make down): "
                              "no port of it listens, nothing of it runs or is registered, no state dir is left."),
) -> None:
    """Check reality against the spec: processes, ports, health probes and who answered them,
    registrations, Consul checks, routes.

    Prints the verdict (PASSING, FAILING or INCOMPLETE) and one line per failed check or check that
    could not run, as goss does; --verbose adds the table of every check. Exit 0 only when every
    check ran and passed; 1 when one failed or did not run; 2 on a bad spec.
    """
    from meshspec.verify.output import print_table, summary_line, to_json, to_junit, to_tap

    run = run_verify(gone)
    output_format = Format.JSON if json_out else output_format
    if output_format == Format.JSON:
        typer.echo(to_json(run))
    elif output_format == Format.TAP:
        typer.echo(to_tap(run), nl=False)
    elif verbose:
        print_table(run)
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(to_junit(run))
    for failure in run.failures:
        typer.echo(failure.line, err=True)
    for skip in run.skips:  # not run, so not passed: named, and the run is INCOMPLETE
        typer.echo(f"not checked: {skip.id}: {skip.reason}", err=True)
    if output_format == Format.TEXT and not verbose:
        typer.echo(summary_line(run))
    raise typer.Exit(0 if run.ok else DRIFT)


def report_command(
    source: Path | None = typer.Argument(None, help="A `meshspec verify --json` file; none: run verify now."),
    out_dir: Path = typer.Option(Path("reports"), "--out-dir", "-o", help="Where status.md and status.html go."),
) -> None:
    """Write a Markdown and an HTML status report built only from a verify run's JSON."""
    from meshspec.verify.output import to_json
    from meshspec.verify.report import write_reports

    if source is None:
        run = run_verify()
        out_dir.mkdir(parents=True, exist_ok=True)
        source = out_dir / "verify.json"
        source.write_text(to_json(run))
    try:
        data = json.loads(source.read_text())
    except (OSError, ValueError) as err:
        _user_error([f"error: {source}: {err}"])
    for path in write_reports(data, out_dir, source_name=str(source)):
        typer.echo(str(path))


if __name__ == "__main__":  # pragma: no cover - `python -m meshspec.verify.cli` before cli.py registers it
    app = typer.Typer(add_completion=False)
    app.command("verify")(verify_command)
    app.command("report")(report_command)
    app(sys.argv[1:])
