"""The deploy's health wait (converge/ops/health.py): an instance counts as running and passing only
once its status can be a probe of it, and supervisorctl's uptimes are read as seconds."""

from __future__ import annotations

from meshspec.common.damping import damped_output
from meshspec.converge.facts.supervisor import ProgramStates, RunningUptimes
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


def test_supervisorctl_uptimes_are_seconds():
    output = ["mesh-checker                     RUNNING   pid 812, uptime 0:00:05",
              "redis-local-0                    RUNNING   pid 90, uptime 1 day, 2:03:04",
              "web-local-0                      RUNNING   pid 91, uptime 3 days, 0:00:00",
              "web-local-1                      STOPPED   Dec 03 04:50 PM",
              "files-local-0                    STARTING  ",
              "mcp-local-0                      BACKOFF   Exited too quickly (process log may have details)"]
    assert RunningUptimes().process(output) == {"mesh-checker": 5, "redis-local-0": 93784, "web-local-0": 259200}


def test_supervisord_answers_only_when_supervisorctl_says_so():
    """The deploy starts supervisord where its status has no answer: the socket is not there (4)
    or, on a new host, neither is the configuration file (2); 3 is an answer with a program down."""
    running = ["web-local-0                      RUNNING   pid 91, uptime 3 days, 0:00:00"]
    assert ProgramStates().process([*running, "supervisorctl: 0"]) == {"web-local-0": "RUNNING"}
    assert ProgramStates().process(["web-local-0  STOPPED   Dec 03 04:50 PM", "supervisorctl: 3"]) == {"web-local-0": "STOPPED"}
    assert ProgramStates().process(["unix:///srv/meshspec/supervisor/supervisor.sock no such file", "supervisorctl: 4"]) is None
    assert ProgramStates().process(["Error: could not find config file /srv/meshspec/supervisor/supervisord.conf",
                                    "supervisorctl: 2"]) is None
