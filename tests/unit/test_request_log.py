"""The proxy's request-log line (common/request_log.py) as the controller reads it back, and what one
line adds to its metrics (runtime/proxy/request_log.py). The live path, HAProxy's ring followed
across a reload, is tests/proxy/test_dataplane.py's."""

from __future__ import annotations

import json
import re

from prometheus_client import CollectorRegistry

from meshspec.common.request_log import FORMAT, Answer, parse
from meshspec.runtime.proxy.request_log import Durations, slos_of


def line(**fields) -> str:
    """A line as HAProxy writes FORMAT, with `fields` for its values."""
    names = re.findall(r'"(\w+)":', FORMAT)
    entry = {name: "-" for name in names} | {"backend": "svc_web", "caller": "api", "status": 200, "t_total_ms": 12,
                                              "t_data_ms": -1}
    return json.dumps(entry | fields)


def test_a_line_is_one_answer_of_a_backend_until_its_headers():
    assert parse(line(t_total_ms=1234, status=503)) == Answer("svc_web", "api", 503, 1.234)  # HAProxy's own: no data
    assert parse(line(t_total_ms=60_020, t_data_ms=60_000)) == Answer("svc_web", "api", 200, 0.02)  # a 60 s stream


def test_what_is_no_answer_is_refused():
    assert parse(line(status=-1)) is None  # the client went before any answer
    assert parse(line(t_total_ms=-1)) is None
    assert parse("Unknown event ring") is None
    assert parse('{"backend": "svc_web"}') is None


def test_each_answer_counts_and_those_over_the_slo_apart():
    registry = CollectorRegistry()
    durations = Durations(registry)
    slos = slos_of({"backends": {"svc_web": {"routing": {"slo": {"latency": 500}}}}})
    assert slos == {"svc_web": 0.5}
    durations.expect(slos)
    assert registry.get_sample_value("meshspec_proxy_request_duration_seconds_count", {"proxy": "svc_web"}) == 0
    assert registry.get_sample_value("meshspec_proxy_responses_over_slo_total", {"proxy": "svc_web"}) == 0
    for ms in (10, 400, 500, 501, 2000):
        durations.record(line(t_total_ms=ms), slos)
    durations.record(line(caller="operator"), slos)
    durations.record(line(backend="mesh", status=429, t_total_ms=0), slos)  # the edge's own answer: no SLO
    durations.record("not a line", slos)
    durations.record("25 events dropped", slos)  # HAProxy's notice in its ring for a reader behind
    durations.record("1 event dropped", slos)

    def value(name: str, **labels) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("meshspec_proxy_request_duration_seconds_count", proxy="svc_web") == 6
    assert value("meshspec_proxy_caller_requests_total", proxy="svc_web", caller="api") == 5
    assert value("meshspec_proxy_caller_requests_total", proxy="svc_web", caller="operator") == 1
    assert value("meshspec_proxy_caller_requests_total", proxy="mesh", caller="api") is None
    assert value("meshspec_proxy_request_duration_seconds_bucket", proxy="svc_web", le="0.5") == 4
    assert value("meshspec_proxy_responses_over_slo_total", proxy="svc_web") == 2
    assert value("meshspec_proxy_request_duration_seconds_count", proxy="mesh") == 1
    assert value("meshspec_proxy_responses_over_slo_total", proxy="mesh") is None
    assert value("meshspec_proxy_request_log_unread_lines_total") == 1
    assert value("meshspec_proxy_request_log_dropped_lines_total") == 26
