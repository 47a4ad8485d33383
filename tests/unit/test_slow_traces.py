"""backend-api's reading of Phoenix's slowest traces (runtime/services/slow_traces.py): the entry
span of a trace, the rows the dashboard lists, the link into Phoenix's UI, and where that UI is.
The answers are shaped as Phoenix 20.26.1 gave them for spans sent by the OpenTelemetry SDK."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from meshspec.runtime.services.slow_traces import (
    TracesUnreadable,
    data_of,
    entry_span,
    limit_of,
    phoenix_ui,
    slow_rows,
    trace_link,
)

PROJECT = "UHJvamVjdDox"  # Phoenix's id of its default project


def span(span_id: str, parent: str | None, start: str, end: str, name: str = "POST") -> dict:
    """One span of a trace as `/v1/projects/<p>/traces?include_spans=true` lists it."""
    return {"id": "U3Bhbjo0", "span_id": span_id, "parent_id": parent, "name": name, "span_kind": "UNKNOWN",
            "status_code": "UNSET", "start_time": f"2026-12-05T21:00:{start}+00:00",
            "end_time": f"2026-12-05T21:00:{end}+00:00"}


# backend-api's server span under the proxy's traceparent (a945…, never sent), its client span
# relaying to semantic-search, and semantic-search's server span under that.
RELAYED = [span("c1", "aeae1a037c5ca263", "01.500000", "01.780000"),
           span("aeae1a037c5ca263", "a945ca00236671b6", "01.484451", "01.791457", "POST /api/v1/mesh/proxy"),
           span("s1", "c1", "01.510000", "01.770000", "POST /search")]


def test_the_entry_span_is_the_one_whose_parent_is_no_span_of_the_trace():
    assert entry_span(RELAYED)["span_id"] == "aeae1a037c5ca263"


def test_of_several_entry_spans_the_earliest_is_the_trace_s_entry():
    # one caller's traceparent on two requests: two server spans, neither under the other
    first, second = span("b", "root", "02.000000", "02.100000"), span("a", "root", "01.000000", "01.100000")
    assert entry_span([first, second])["span_id"] == "a"


def test_a_trace_without_spans_has_no_entry():
    assert entry_span([]) is None


def trace(trace_id: str, start: str, end: str, spans: list[dict]) -> dict:
    return {"id": "VHJhY2U6Mg==", "trace_id": trace_id, "project_id": PROJECT,
            "start_time": f"2026-12-05T21:00:{start}+00:00", "end_time": f"2026-12-05T21:00:{end}+00:00",
            "spans": spans}


ENTRY = {"aeae1a037c5ca263": {"name": "POST /api/v1/mesh/proxy", "context": {"span_id": "aeae1a037c5ca263"},
                              "attributes": {"service.name": "backend-api", "service.instance.id": "backend-api-1"}}}


def test_each_trace_keeps_phoenix_s_order_and_names_its_entry_s_instance_and_its_duration():
    slow = trace("c54f598f74b3c848f3a94792cde656ca", "01.484451", "01.791457", RELAYED)
    quick = trace("d3b6755277a3870d6ebc39915f940cfa", "05.000000", "05.050000", [span("x", "y", "05.0", "05.05")])
    rows = slow_rows([slow, quick], ENTRY, "http://10.0.0.5:6006")
    assert [r["trace_id"] for r in rows] == [slow["trace_id"], quick["trace_id"]]
    assert rows[0] == {"trace_id": slow["trace_id"], "duration_ms": 307.0, "start_time": slow["start_time"], "spans": 3,
                       "span": "POST /api/v1/mesh/proxy", "service": "backend-api", "instance": "backend-api-1",
                       "link": f"http://10.0.0.5:6006/projects/{PROJECT}/traces/{slow['trace_id']}"}
    # an entry span Phoenix did not return with its attributes: named, but by no service
    assert (rows[1]["span"], rows[1]["service"], rows[1]["duration_ms"]) == ("POST", None, 50.0)


def test_without_an_address_there_is_no_link():
    assert slow_rows([trace("t", "01.0", "02.0", RELAYED)], ENTRY, None)[0]["link"] is None
    assert trace_link(None, PROJECT, "t") is None


def test_the_link_quotes_what_it_carries():
    assert trace_link("http://h:1", "UHJv/amVj==", "ab") == "http://h:1/projects/UHJv%2FamVj%3D%3D/traces/ab"


def registered(address: str, port: int) -> dict:
    return {"Node": {"Node": "n1", "Address": "10.0.0.1"}, "Service": {"ID": "phoenix-0", "Address": address,
                                                                          "Port": port}, "Checks": []}


def test_phoenix_s_ui_is_where_the_registry_puts_its_one_instance():
    assert phoenix_ui([registered("10.0.0.5", 6006)]) == ("http://10.0.0.5:6006", None)
    assert phoenix_ui([registered("fd00::5", 6006)]) == ("http://[fd00::5]:6006", None)


@pytest.mark.parametrize("count", [0, 2])
def test_no_link_unless_the_registry_has_exactly_one_instance(count):
    ui, why = phoenix_ui([registered("10.0.0.5", 6006 + i) for i in range(count)])
    assert ui is None and f"{count} passing instances" in why


def test_an_answer_without_a_list_of_data_is_unreadable():
    assert data_of('{"data": [], "next_cursor": null}') == []
    with pytest.raises(TracesUnreadable):
        data_of('{"detail": "Project with name default not found"}')


@pytest.mark.parametrize("given, limit", [({}, 10), ({"limit": "1"}, 1), ({"limit": "50"}, 50)])
def test_limit_within_bounds(given, limit):
    assert limit_of(given) == limit


@pytest.mark.parametrize("given", ["0", "51", "ten", "-3"])
def test_limit_out_of_bounds_is_a_400(given):
    with pytest.raises(web.HTTPBadRequest) as refused:
        limit_of({"limit": given})
    assert "from 1 to 50" in json.loads(refused.value.text)["error"]
