"""Flap damping as Consul's StatusHandler does it: a result changes a check's status only after
enough consecutive ones (SuccessBeforePassing, FailuresBeforeWarning, FailuresBeforeCritical).
Used by the embedded agent's own check runners and by the host's checker. Pure."""

from __future__ import annotations

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"


class Gate:
    def __init__(self, success_before_passing: int, failures_before_critical: int,
                 failures_before_warning: int = 0, status: str = CRITICAL) -> None:
        self.successes_needed = max(1, success_before_passing)
        self.failures_critical = max(1, failures_before_critical)
        self.failures_warning = failures_before_warning or self.failures_critical
        self.successes = self.failures = 0
        self.status = status  # the status last published: a new check starts critical, as Consul's do

    def __call__(self, result: str) -> str | None:
        """Take one probe result (passing, warning or critical): the status to publish now, or None
        while a run of results has not reached its threshold (the published status stands)."""
        if result in (PASSING, WARNING):
            self.successes, self.failures = self.successes + 1, 0
            published = result if self.successes >= self.successes_needed else None
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= self.failures_critical:
                published = CRITICAL
            else:
                published = WARNING if self.failures >= self.failures_warning else None
        if published is not None:
            self.status = published
        return published
