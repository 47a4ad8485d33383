"""Pure parts of the agent: durations, definitions, filters, thresholds, the critical-service reaper."""

from __future__ import annotations

import pytest

from meshspec.common.durations import parse_duration
from meshspec.runtime.agent.blocking import MAX_WAIT, parse_blocking
from meshspec.runtime.agent.checks import Thresholds
from meshspec.runtime.agent.core import services_to_reap
from meshspec.runtime.agent.definitions import parse_check_registration, parse_service
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.filter import compile_filter


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10), ("500ms", 0.5), ("1m", 60), ("1m30s", 90), ("120000ms", 120), ("1h", 3600), ("0", 0),
    (2_000_000_000, 2),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["10", "s", "10x", "1.2.3s", True])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_blocking_wait_defaults_caps_and_jitter():
    assert 300 <= parse_blocking({"index": "5"}).wait <= 300 * 17 / 16
    assert MAX_WAIT <= parse_blocking({"index": "5", "wait": "1h"}).wait <= MAX_WAIT * 17 / 16
    assert parse_blocking({}).index == 0


def test_service_keys_match_case_and_underscore_insensitively():
    service, checks = parse_service({
        "name": "web", "ID": "w1", "tagged_addresses": {"wan": {"address": "1.2.3.4", "port": 80}},
        "enabletagoverride": True, "META": {"CamelKey": "kept"},
        "checks": [{"http": "http://x", "interval": "10s", "deregister_critical_service_after": "90s",
                    "success_before_passing": 2}],
    }, False)
    assert service["ID"] == "w1" and service["EnableTagOverride"] is True
    assert service["TaggedAddresses"] == {"wan": {"Address": "1.2.3.4", "Port": 80}}
    assert service["Meta"] == {"CamelKey": "kept"}
    assert checks[0]["CheckID"] == "service:w1" and checks[0]["DeregisterCriticalServiceAfter"] == 90
    assert checks[0]["SuccessBeforePassing"] == 2 and checks[0]["Interval"] == 10


def test_check_registration_defaults_id_to_name_and_clamps_interval():
    check = parse_check_registration({"Name": "disk", "TCP": "127.0.0.1:1", "Interval": "100ms"}, False)
    assert check["CheckID"] == "disk" and check["Type"] == "tcp" and check["Interval"] == 1.0


def test_script_checks_need_the_flag():
    with pytest.raises(ConsulError, match="Scripts are disabled"):
        parse_check_registration({"Name": "s", "Args": ["true"], "Interval": "1s"}, False)
    assert parse_check_registration({"Name": "s", "Args": ["true"], "Interval": "1s"}, True)["Type"] == "script"


@pytest.mark.parametrize(("expr", "expected"), [
    ('Service.Meta.env == "prod"', True),
    ("Service.Meta.env != prod", False),
    ('"blue" in Service.Tags', True),
    ('"green" not in Service.Tags', True),
    ("Service.Tags contains blue and Service.Port == 8080", True),
    ("not (Service.Port == 8080) or Service.Meta is empty", False),
    ('Service.ID matches "^web-[0-9]+$"', True),
    ("Checks.Status == critical", False),
    ("Service.Missing is empty", True),
])
def test_filter_expressions(expr, expected):
    entry = {"Service": {"ID": "web-1", "Tags": ["blue"], "Meta": {"env": "prod"}, "Port": 8080},
             "Checks": [{"Status": "passing"}]}
    assert compile_filter(expr)(entry) is expected


def test_a_filter_regex_runs_in_linear_time_with_consuls_syntax():
    """RE2, as Go's regexp in Consul: `(a+)+$` over 40 a's and a b ends at once (a backtracking
    engine would take 2^40 steps: this test would never finish), and a back-reference, which Go's
    syntax lacks, is a 400 naming the pattern."""
    entry = {"Service": {"ID": "a" * 40 + "b"}}
    assert compile_filter('Service.ID matches "(a+)+$"')(entry) is False
    with pytest.raises(ConsulError) as err:
        compile_filter('Service.ID matches "(a)\\\\1"')
    assert err.value.status == 400 and "invalid regular expression" in str(err.value.message), err.value.message


def test_bad_filter_is_a_400():
    with pytest.raises(ConsulError) as err:
        compile_filter("Service.Port ==")
    assert err.value.status == 400


def _check(**overrides):
    base = {"CheckID": "c", "SuccessBeforePassing": 0, "FailuresBeforeCritical": 0, "FailuresBeforeWarning": 0,
            "ServiceID": "svc", "DeregisterCriticalServiceAfter": 0}
    return {**base, **overrides}


def test_thresholds_gate_status_changes():
    reports = []
    gate = Thresholds(_check(SuccessBeforePassing=2, FailuresBeforeCritical=3, FailuresBeforeWarning=2),
                      lambda *r: reports.append(r[1]))
    gate("passing", "")
    assert reports == []
    gate("passing", "")
    assert reports == ["passing"]
    gate("critical", "")
    gate("critical", "")
    gate("critical", "")
    assert reports == ["passing", "warning", "critical"]


def test_reaper_honours_deregister_after_and_its_one_minute_floor():
    checks = {"a": _check(CheckID="a", ServiceID="web", DeregisterCriticalServiceAfter=90),
              "b": _check(CheckID="b", ServiceID="db", DeregisterCriticalServiceAfter=10),
              "c": _check(CheckID="c", ServiceID="keep")}
    since = {"a": 0.0, "b": 0.0, "c": 0.0}
    assert services_to_reap(checks, since, now=30) == set()
    assert services_to_reap(checks, since, now=61) == {"db"}  # 10s is raised to Consul's 1 minute
    assert services_to_reap(checks, since, now=91) == {"db", "web"}
    assert services_to_reap(checks, {}, now=1000) == set()
