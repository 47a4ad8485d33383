"""The deploy's health wait (converge/ops/health.py): an instance counts as running and passing only
once its status can be a probe of it."""

from __future__ import annotations

from meshspec.common.damping import damped_output
from meshspec.converge.ops.health import _waiting

SETTLE = {"web-local-0": 3.0, "web-local-1": 3.0}


def test_a_passing_instance_that_ran_its_settle_time_is_done():
    statuses = {"web-local-0": ("passing", "HTTP 200"), "web-local-1": ("passing", "HTTP 200")}
    assert _waiting(statuses, {"web-local-0": 3.0, "web-local-1": 60.0}, SETTLE) == []


def test_a_status_older_than_the_instance_is_not_its_own():
    # Consul kept "passing" across the restart: the program has run 1 s, less than its check's TTL.
    statuses = {"web-local-0": ("passing", "HTTP 200"), "web-local-1": ("passing", "HTTP 200")}
    assert _waiting(statuses, {"web-local-0": 1.0, "web-local-1": 60.0}, SETTLE) == ["web-local-0"]


def test_not_running_or_not_passing_waits():
    statuses = {"web-local-0": ("passing", "HTTP 200"), "web-local-1": ("critical", "connection refused")}
    assert _waiting(statuses, {"web-local-1": 60.0}, SETTLE) == ["web-local-0", "web-local-1"]


def test_a_failure_damping_still_holds_passing_is_not_passed():
    statuses = {"web-local-0": ("passing", damped_output(3, 1, "GET /health failed: timed out")),
                "web-local-1": ("passing", "HTTP 200")}
    assert _waiting(statuses, {"web-local-0": 60.0, "web-local-1": 60.0}, SETTLE) == ["web-local-0"]
