"""`meshspec chaos run [EXPERIMENT...]`: Chaos Toolkit's engine (chaostoolkit-lib) runs each
experiment against the mesh the settings describe (MESH_*, as `meshspec verify`), with meshspec's
actions and probes; one verdict line each, the journals and an HTML report with the plots.

meshspec's own command rather than `chaos run` with an extension: an experiment needs the mesh it
acts on (the plan, the proxy's runtime API, supervisord), the load and the watcher around it, and
the report after it; `chaos run` would leave each experiment to find those itself. The experiments
stay plain Chaos Toolkit JSON: `chaos run` runs one too, inside a `meshspec chaos run` only."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from meshspec import settings
from meshspec.chaos import run as chaos_run
from meshspec.chaos.figures import read_jsonl
from meshspec.chaos.report import Outcome, write_report
from meshspec.converge.mesh import configured_mesh

CATALOGUE = Path(__file__).resolve().parents[3] / "chaos"

chaos_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Chaos experiments against the running mesh.")


@chaos_app.callback()
def chaos_group() -> None:
    """Chaos experiments against the running mesh (Chaos Toolkit)."""


def verdict_line(name: str, journal: dict, verdicts: list[dict]) -> tuple[bool, str]:
    """PASS only when both hypotheses were met and every action of the method succeeded: Chaos
    Toolkit journals `completed`, not deviated, both when the hypothesis before the method was missed
    (the method never ran) and when an action failed (the fault may never have happened)."""
    states = journal.get("steady_states") or {}
    met_before = (states.get("before") or {}).get("steady_state_met") is True
    met_after = (states.get("after") or {}).get("steady_state_met") is True
    failed = [r for r in journal.get("run", []) if r.get("status") != "succeeded"]
    passed = (journal.get("status") == "completed" and not journal.get("deviated") and met_before and met_after
              and not failed)
    shown = [v for v in verdicts if ("(before)" in v["probe"]) != met_before]
    figures = "; ".join(f"{v['probe']} {'ok' if v['ok'] else 'MISSED'} "
                        + ", ".join(f"{k}={val}" for k, val in v["figures"].items()) for v in shown)
    if passed:
        why = ""
    elif not met_before:
        why = f" [{journal.get('status')}, not steady before the method: it did not run]"
    elif failed:
        first = failed[0]
        trace = first.get("exception") or [str(first.get("output") or "?")]  # chaoslib: the formatted traceback
        error = "".join(trace).strip().splitlines()[-1:] or ["?"]
        why = f" [{journal.get('status')}, action {first['activity']['name']} failed: {error[0]}]"
    else:
        why = f" [{journal.get('status')}{', deviated' if journal.get('deviated') else ''}]"
    return passed, f"{'PASS' if passed else 'FAIL'} {name}{why}: {figures or 'no figures'}"


@chaos_app.command("run")
def run_command(
    experiments: Annotated[list[Path] | None, typer.Argument(help="Experiment files (default: every one in chaos/).")] = None,
    reports: Annotated[Path, typer.Option(help="Where the journals, plots and report.html go.")] = Path("reports/chaos"),
    tag: Annotated[str | None, typer.Option(help="Only the experiments with this tag (e.g. ci).")] = None,
) -> None:
    """Run chaos experiments against the running mesh; exit 1 when one misses its tolerance."""
    from chaoslib.experiment import run_experiment
    from chaoslib.loader import load_experiment

    logging.getLogger("chaostoolkit").setLevel(logging.WARNING)
    mesh = configured_mesh()
    key = mesh.plan.layout.consumer_key_file(mesh.plan.spec.proxy.operator) if mesh.plan.spec.consumers else None
    paths = experiments or sorted(CATALOGUE.glob("*.json"))
    outcomes = []
    for path in paths:
        experiment = load_experiment(str(path))
        if tag and tag not in experiment.get("tags", []):
            continue
        directory = reports / path.stem
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
        typer.echo(f"chaos: {path.stem}: {experiment['title']} ...")
        chaos_run.CURRENT = chaos_run.ChaosRun(path.stem, directory, mesh, settings.runtime(), key and str(key))
        try:
            journal = run_experiment(experiment)
        finally:
            chaos_run.CURRENT.finish()
            chaos_run.CURRENT = None
        (directory / "journal.json").write_text(json.dumps(journal, indent=2, default=str))
        verdicts = read_jsonl((directory / "verdicts.jsonl").read_text()) if (directory / "verdicts.jsonl").exists() else []
        passed, line = verdict_line(path.stem, journal, verdicts)
        typer.echo(line)
        outcomes.append(Outcome(path.stem, experiment["title"], passed, line, directory))
    if not outcomes:
        typer.echo("chaos: no experiment to run", err=True)
        raise typer.Exit(2)
    typer.echo(f"chaos: report {write_report(outcomes, reports / 'report.html')}")
    if not all(o.passed for o in outcomes):
        raise typer.Exit(1)
