"""A status report (Markdown and HTML) built only from a verify run's JSON.

Every number in it is read from a check of that run (or counts its checks), and the report is
stamped with when it was measured: the run's start and end, and each check's own start and time.
Both formats render the same sections, so they always say the same thing.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from meshspec.verify.run import verdict_of

INSTANCE_COLUMNS = ("running", "listening", "healthy", "registered", "passing")
MARKS = {"passed": "ok", "failed": "FAIL", "skipped": "skip"}


@dataclass(frozen=True)
class Section:
    title: str
    text: list[str]  # paragraphs
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _cell(check: dict | None) -> str:
    if check is None:
        return "-"
    return f"{MARKS[check['status']]} ({_ms(check['duration_ms'])} ms)"


def _probe_detail(check: dict | None) -> str:
    """The number a health probe measured: tools listed, HTTP status, exit code."""
    if check is None:
        return "-"
    d = check.get("detail") or {}
    if d.get("tool_count") is not None:
        return f"{d['tool_count']} tools"
    if d.get("http_status") is not None:
        return f"HTTP {d['http_status']}"
    if d.get("exit_code") is not None:
        return f"exit {d['exit_code']}"
    return d.get("probe") or "-"


def sections(run: dict, source_name: str = "") -> list[Section]:
    checks = run["checks"]
    by_id = {c["id"]: c for c in checks}
    statuses = {s: sum(c["status"] == s for c in checks) for s in ("passed", "failed", "skipped")}
    verdict = verdict_of([c["status"] for c in checks])
    stamp = Section(
        f"Mesh {run['mesh']}: {verdict}",
        [f"Measured by meshspec verify from {run['started_at']} to {run['finished_at']} "
         f"({_ms(run['duration_ms'])} ms); spec {run.get('spec') or '-'}, state dir {run['state_dir']}, "
         f"port offset {run['port_offset']}, Consul at {run['consul']}."
         + (f" Source: {source_name}." if source_name else "")],
    )
    counts = by_id.get("mesh/counts", {})
    numbers = counts.get("detail") or {}
    regs = by_id.get("mesh/no-extra-registrations", {})
    summary_rows = [
        (label, str(numbers[key]), "mesh/counts", counts.get("started_at", "-"))
        for key, label in (("planned", "instances planned"), ("running", "programs running"),
                           ("registered", "instances registered"), ("passing", "Consul checks passing"))
        if key in numbers
    ]
    if "registrations" in (regs.get("detail") or {}):
        summary_rows.append(("registrations in Consul", str(regs["detail"]["registrations"]),
                             "mesh/no-extra-registrations", regs["started_at"]))
    summary_rows += [
        ("checks run", str(len(checks)), "all checks", run["started_at"]),
        *((f"checks {s}", str(n), "all checks", run["started_at"]) for s, n in statuses.items()),
    ]
    summary = Section("Summary", [], ("what", "number", "measured by", "at"), tuple(summary_rows))

    failed = [c for c in checks if c["status"] == "failed"]
    failures = Section(
        "Failed checks",
        [] if failed else ["None."],
        ("check", "at", "ms", "reason") if failed else (),
        tuple((c["id"], c["started_at"], _ms(c["duration_ms"]), c["reason"]) for c in failed),
    )

    skipped = [c for c in checks if c["status"] == "skipped"]
    not_run = Section(
        "Checks not run",
        ["None: every check ran."] if not skipped else
        ["Not measured, so not passed: the verdict is INCOMPLETE while any check is here."],
        ("check", "at", "why") if skipped else (),
        tuple((c["id"], c["started_at"], c["reason"]) for c in skipped),
    )

    instance_ids = list(dict.fromkeys(c["subject"] for c in checks if c["check"] in INSTANCE_COLUMNS))
    instances = Section(
        "Instances",
        ["Each cell: the check's result and how long it took."],
        ("instance", "service", *INSTANCE_COLUMNS, "probe measured"),
        tuple(
            (i, next(c["service"] for c in checks if c["subject"] == i),
             *(_cell(by_id.get(f"{i}/{k}")) for k in INSTANCE_COLUMNS), _probe_detail(by_id.get(f"{i}/healthy")))
            for i in instance_ids
        ),
    )
    route_checks = [c for c in checks if c["check"] == "routable"]
    routes = Section(
        "Routes through the proxy", [],
        ("service", "result", "ms", "measured", "reason"),
        tuple((c["subject"], MARKS[c["status"]], _ms(c["duration_ms"]), _probe_detail(c), c["reason"])
              for c in route_checks),
    )
    every = Section(
        "Every check", [],
        ("check", "result", "started at", "ms", "reason"),
        tuple((c["id"], MARKS[c["status"]], c["started_at"], _ms(c["duration_ms"]), c["reason"]) for c in checks),
    )
    reads = Section(
        "Shared reads", ["Read once per run, before the checks that need them."],
        ("source", "ms", "error"),
        tuple((name, _ms(r.get("duration_ms")), r.get("error") or "-") for name, r in (run.get("sources") or {}).items()),
    )
    return [stamp, summary, failures, not_run, instances, routes, every, reads]


# --- rendering ---------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(parts: list[Section]) -> str:
    lines: list[str] = []
    for n, s in enumerate(parts):
        lines += [("# " if n == 0 else "## ") + s.title, ""]
        for para in s.text:
            lines += [para, ""]
        if s.header:
            lines.append("| " + " | ".join(s.header) + " |")
            lines.append("|" + "|".join("---" for _ in s.header) + "|")
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in s.rows]
            lines.append("")
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top;font-size:90%}
th{background:#f4f4f4}.FAIL{color:#b00;font-weight:bold}.ok{color:#070}.skip{color:#888}"""


def _html_cell(text: str) -> str:
    first = text.split(" ", 1)[0]
    cls = f' class="{first}"' if first in MARKS.values() else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def to_html(parts: list[Section]) -> str:
    body: list[str] = []
    for n, s in enumerate(parts):
        tag = "h1" if n == 0 else "h2"
        body.append(f"<{tag}>{html.escape(s.title)}</{tag}>")
        body += [f"<p>{html.escape(p)}</p>" for p in s.text]
        if s.header:
            body.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in s.header) + "</tr></thead><tbody>")
            body += ["<tr>" + "".join(_html_cell(v) for v in row) + "</tr>" for row in s.rows]
            body.append("</tbody></table>")
    title = html.escape(parts[0].title)
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{CSS}</style></head>\n"
            f"<body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_reports(run: dict, out_dir: Path, source_name: str = "") -> list[Path]:
    """Write status.md and status.html for one verify run's JSON; return their paths."""
    parts = sections(run, source_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, page = out_dir / "status.md", out_dir / "status.html"
    md.write_text(to_markdown(parts))
    page.write_text(to_html(parts))
    return [md, page]
