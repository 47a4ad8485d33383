"""The output of a check that flap damping keeps passing although its latest probe failed. The
host's checker writes it (runtime.checker); the deploy's health wait reads it, so that a deploy
ends on probes that passed, not on damping."""

from __future__ import annotations

PREFIX = "passing until "


def damped_output(failures_critical: int, failures: int, last: str) -> str:
    return f"{PREFIX}{failures_critical} failures in a row ({failures} so far); last: {last}"


def is_damped(output: str) -> bool:
    return output.startswith(PREFIX)
