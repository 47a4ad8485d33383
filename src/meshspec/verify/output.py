"""A verify run as people and tools read it: a table (rich), JSON, JUnit XML. Pure but for printing."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from rich.console import Console
from rich.table import Table

from meshspec.verify.run import FAILED, PASSED, SKIPPED, VerifyRun

STYLES = {PASSED: "green", FAILED: "bold red", SKIPPED: "dim"}
MARKS = {PASSED: "ok", FAILED: "FAIL", SKIPPED: "skip"}


def to_json(run: VerifyRun) -> str:
    return json.dumps(run.to_dict(), indent=2)


def summary_line(run: VerifyRun) -> str:
    return (f"{run.verdict}: {len(run.checks)} checks, {run.count(PASSED)} passed, {run.count(FAILED)} failed, "
            f"{run.count(SKIPPED)} skipped in {run.duration_ms:.0f} ms ({run.started_at} .. {run.finished_at})")


def table(run: VerifyRun) -> Table:
    out = Table(title=f"mesh {run.mesh}: verify", title_justify="left", expand=False)
    for name, justify in (("subject", "left"), ("check", "left"), ("", "left"), ("ms", "right"), ("reason", "left")):
        out.add_column(name, justify=justify, overflow="fold")
    previous = None
    for c in run.checks:
        subject = c.subject if c.subject != previous else ""
        previous = c.subject
        out.add_row(subject, c.title, f"[{STYLES[c.status]}]{MARKS[c.status]}[/]", f"{c.duration_ms:.0f}", c.reason)
    return out


def print_table(run: VerifyRun, console: Console | None = None) -> None:
    console = console or Console()
    console.print(table(run))
    console.print(summary_line(run))


def to_tap(run: VerifyRun) -> str:
    """TAP version 14: one test point per check, its reason as the description; a check that did
    not run is a `# SKIP` (which TAP consumers count apart from passes)."""
    lines = ["TAP version 14", f"1..{len(run.checks)}"]
    for n, c in enumerate(run.checks, 1):
        reason = " ".join(c.reason.replace("#", "\\#").split())
        if c.status == SKIPPED:
            lines.append(f"ok {n} - {c.id} # SKIP {reason}")
        else:
            lines.append(f"{'ok' if c.status == PASSED else 'not ok'} {n} - {c.id}: {reason}")
    return "\n".join(lines) + "\n"


def to_junit(run: VerifyRun) -> str:
    """JUnit XML: one testcase per check (classname = its subject); a failure's message is its reason."""
    suites = ET.Element("testsuites", name="meshspec verify", tests=str(len(run.checks)),
                        failures=str(run.count(FAILED)), skipped=str(run.count(SKIPPED)),
                        time=f"{run.duration_ms / 1000:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=f"mesh {run.mesh}", tests=str(len(run.checks)),
                          failures=str(run.count(FAILED)), errors="0", skipped=str(run.count(SKIPPED)),
                          time=f"{run.duration_ms / 1000:.3f}", timestamp=run.started_at)
    props = ET.SubElement(suite, "properties")
    for key in ("spec", "port_offset", "state_dir", "consul", "started_at", "finished_at"):
        ET.SubElement(props, "property", name=key, value=str(getattr(run, key)))
    for c in run.checks:
        case = ET.SubElement(suite, "testcase", classname=c.subject, name=c.check, time=f"{c.duration_ms / 1000:.3f}")
        if c.status == FAILED:
            ET.SubElement(case, "failure", message=c.reason, type="drift").text = c.line
        elif c.status == SKIPPED:
            ET.SubElement(case, "skipped", message=c.reason)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
