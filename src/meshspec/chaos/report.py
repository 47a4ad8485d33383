"""The chaos report: for each experiment, its verdict and a plot of the load over time (request and
failure rates; p50/p99 latency), the faults' windows shaded, the moments the proxy took a server out
of rotation (red) and back (green) marked. PNGs embedded in one HTML page."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402

from meshspec.chaos.figures import Second, load_seconds, read_jsonl  # noqa: E402


@dataclass(frozen=True)
class Outcome:
    """One experiment as the report shows it."""

    name: str
    title: str
    passed: bool
    line: str  # the verdict line
    directory: Path


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def plot(directory: Path, title: str) -> bytes:
    """The PNG of one run's records."""
    history: list[Second] = load_seconds(_text(directory / "requests.csv"))
    faults = read_jsonl(_text(directory / "faults.jsonl"))
    rotation = read_jsonl(_text(directory / "rotation.jsonl"))
    zero = history[0].t if history else min([f["start"] for f in faults], default=0.0)
    figure, (rates, latency) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5))
    t = [s.t - zero for s in history]
    rates.plot(t, [s.rps for s in history], label="answers/s", color="tab:blue")
    rates.plot(t, [s.fails for s in history], label="failures/s", color="tab:red")
    rates.set_ylabel("requests ended, per second")
    latency.plot(t, [s.p50 for s in history], label="p50", color="tab:green")
    latency.plot(t, [s.p99 for s in history], label="p99", color="tab:orange")
    latency.set_ylabel("latency by start, ms")
    if max((s.p99 or 0 for s in history), default=0) > 1000:  # a hang's 20 s beside the usual milliseconds
        latency.set_yscale("symlog", linthresh=100)
        latency.yaxis.set_major_formatter(ScalarFormatter())  # plain milliseconds, not 1e4
    latency.set_ylim(bottom=0)
    latency.set_xlabel("seconds since the load began")
    for axes in (rates, latency):
        for f in faults:
            axes.axvspan(f["start"] - zero, max(f["end"], f["start"] + 0.3) - zero, color="grey", alpha=0.3,
                         label="fault" if axes is rates and f is faults[0] else None)
        for e in rotation:
            if e["t"] >= zero and not e.get("first"):
                axes.axvline(e["t"] - zero, color="tab:green" if e["in"] else "tab:red", linestyle=":", linewidth=1)
        axes.grid(alpha=0.3)
    rates.legend(loc="upper right", fontsize="small")
    latency.legend(loc="upper right", fontsize="small")
    rates.set_title(title + "\n(dotted: a server out of rotation, red, and back, green)", fontsize="medium")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=90)
    plt.close(figure)
    return out.getvalue()


def write_report(outcomes: list[Outcome], path: Path) -> Path:
    sections = []
    for o in outcomes:
        png = plot(o.directory, o.title)
        (o.directory / "plot.png").write_bytes(png)
        sections.append(f"<h2>{'PASS' if o.passed else 'FAIL'}: {html.escape(o.title)}</h2>"
                        f"<p><code>{html.escape(o.line)}</code></p>"
                        f"<img alt='{html.escape(o.name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    path.write_text("<!doctype html><meta charset=utf-8><title>meshspec chaos</title>"
                    "<h1>meshspec chaos report</h1>" + "".join(sections) + "\n")
    return path
