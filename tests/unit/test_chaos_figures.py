"""What the chaos probes judge, from a run's records. Pure."""

from __future__ import annotations

from meshspec.chaos.cli import verdict_line
from meshspec.chaos.figures import judge_rotation, judge_traffic, load_seconds, load_totals, rotation_windows

STATS = ("Type,Name,Request Count,Failure Count,Median Response Time,50%,99%\n"
         "GET,/svc/x,1000,1,3,3,40\n,Aggregated,1000,1,3,3,40\n")
# start, ms, answered: two quick answers, one failure, one request stuck 2.5 s behind a fault
REQUESTS = "100.1,5,1\n100.2,7,1\n100.3,9,0\n100.9,2500,1\n"


def test_traffic_is_judged_on_locust_s_totals():
    totals = load_totals(STATS)
    assert totals == {"requests": 1000, "failures": 1, "p50_ms": 3.0, "p99_ms": 40.0}
    assert judge_traffic(totals, 0.001, 50)[0] is True
    assert judge_traffic(totals, 0.0, 50)[0] is False  # one failure is too many for a zero tolerance
    assert judge_traffic(totals, 0.001, 39)[0] is False
    assert judge_traffic(load_totals("Type,Name,Request Count,Failure Count,50%,99%\n"), 1, 1e9)[0] is False  # no load: no pass


def test_seconds_count_requests_where_they_end_and_latency_where_they_begin():
    seconds = load_seconds(REQUESTS)
    assert [(s.t, s.rps, s.fails) for s in seconds] == [(100.0, 3, 1), (101.0, 0, 0), (102.0, 0, 0), (103.0, 1, 0)]
    assert (seconds[0].p50, seconds[0].p99, seconds[1].p99) == (9.0, 2500.0, None)  # the stuck one shows at its start
    assert load_seconds("") == []


FAULT = [{"what": "SIGKILL web-local-1", "start": 10.0, "end": 10.0}]


def test_rotation_windows_start_at_the_fault():
    events = [{"t": 5, "server": "a", "in": True}, {"t": 10.4, "server": "a", "in": False},
              {"t": 16, "server": "a", "in": True}]
    assert rotation_windows(events, 10.0) == {"a": [[10.4, 16]]}


def test_the_faulted_server_leaves_in_time_comes_back_and_no_other_leaves():
    events = [{"t": 10.4, "server": "web-local-1", "in": False}, {"t": 16.0, "server": "web-local-1", "in": True}]
    ok, figures = judge_rotation(events, FAULT, "web-local-1", 1.0, 30)
    assert ok and (figures["out_after_s"], figures["back_after_s"]) == (0.4, 6.0)
    assert not judge_rotation(events, FAULT, "web-local-1", 0.3, 30)[0]  # out too late
    assert not judge_rotation(events[:1], FAULT, "web-local-1", 1.0, 30)[0]  # never back
    other = events + [{"t": 11, "server": "web-local-2", "in": False}]
    assert judge_rotation(other, FAULT, "web-local-1", 1.0, 30)[1]["others_out"] == ["web-local-2"]
    assert not judge_rotation([], FAULT, "web-local-1", 1.0, 30)[0]  # a kill nobody noticed


def test_the_verdict_line_names_each_figure_and_the_journal_decides():
    verdicts = [{"probe": "traffic_held (before)", "ok": True, "figures": {"answered": 20}},
                {"probe": "traffic_held", "ok": False, "figures": {"error_ratio": 0.01}}]
    passed, line = verdict_line("x", {"status": "completed", "deviated": True}, verdicts)
    assert not passed and line == "FAIL x [completed, deviated]: traffic_held MISSED error_ratio=0.01"
    assert verdict_line("x", {"status": "completed", "deviated": False}, verdicts[:1])[0]
