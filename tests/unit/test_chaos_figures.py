"""What the chaos probes judge, from a run's records. Pure."""

from __future__ import annotations

from meshspec.chaos.cli import verdict_line
from meshspec.chaos.figures import (
    judge_jobs,
    judge_rotation,
    judge_sessions,
    judge_sessions_kept,
    judge_traffic,
    load_seconds,
    load_totals,
    rotation_windows,
)

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


MET = {"steady_state_met": True}


def test_the_verdict_line_names_each_figure_and_both_hypotheses_decide():
    verdicts = [{"probe": "traffic_held (before)", "ok": True, "figures": {"answered": 20}},
                {"probe": "traffic_held", "ok": False, "figures": {"error_ratio": 0.01}}]
    deviated = {"status": "completed", "deviated": True, "steady_states": {"before": MET, "after": {"steady_state_met": False}}}
    passed, line = verdict_line("x", deviated, verdicts)
    assert not passed and line == "FAIL x [completed, deviated]: traffic_held MISSED error_ratio=0.01"
    met = {"status": "completed", "deviated": False, "steady_states": {"before": MET, "after": MET}}
    assert verdict_line("x", met, verdicts[:1])[0]


def test_a_hypothesis_missed_before_the_method_is_a_failure_whatever_the_journal_s_status():
    # Chaos Toolkit then journals "completed", not deviated, with no hypothesis after (measured, 1.44)
    verdicts = [{"probe": "traffic_held (before)", "ok": False, "figures": {"answered": 17}}]
    journal = {"status": "completed", "deviated": False, "steady_states": {"before": {"steady_state_met": False},
                                                                           "after": None}}
    passed, line = verdict_line("x", journal, verdicts)
    assert not passed
    assert line == "FAIL x [completed, not steady before the method: it did not run]: traffic_held (before) MISSED answered=17"
    assert not verdict_line("x", {"status": "completed", "deviated": False}, [])[0]  # no hypotheses at all


def test_a_failed_action_is_a_failure_though_both_hypotheses_held():
    journal = {"status": "completed", "deviated": False, "steady_states": {"before": MET, "after": MET},
               "run": [{"activity": {"name": "load"}, "status": "succeeded"},
                       {"activity": {"name": "reload"}, "status": "failed",
                        "exception": ["Traceback ...\n", "ReloadError: no new HAProxy worker within 10.0s\n"]}]}
    passed, line = verdict_line("x", journal, [])
    assert not passed and "action reload failed: ReloadError: no new HAProxy worker within 10.0s" in line


def session_events(*rows: tuple[float, int, str, str]) -> list[dict]:
    return [{"t": t, "user": user, "session": session, "event": event} for t, user, session, event in rows]


OWNERS = {"s1": "mcp-0", "s2": "mcp-1", "old": "mcp-0"}  # "old": another client's, in the stick table


def test_sessions_on_the_killed_replica_end_and_reopen_the_others_go_on():
    events = session_events((1, 0, "s1", "opened"), (1, 1, "s2", "opened"), (6, 0, "s1", "ended"), (6.1, 0, "s3", "opened"))
    ok, figures = judge_sessions(events, OWNERS, "mcp-0", fault=5)
    assert ok and figures["on_killed"] == 1 and figures["ended_and_reopened"] == 1 and figures["on_others"] == 1


def test_sessions_fail_when_one_is_not_reopened_another_replica_loses_one_or_a_request_fails():
    not_reopened = session_events((1, 0, "s1", "opened"), (1, 1, "s2", "opened"), (6, 0, "s1", "ended"))
    assert not judge_sessions(not_reopened, OWNERS, "mcp-0", fault=5)[0]
    other_lost = session_events((1, 0, "s1", "opened"), (1, 1, "s2", "opened"), (6, 0, "s1", "ended"),
                                (6.1, 0, "s3", "opened"), (6, 1, "s2", "ended"), (6.1, 1, "s4", "opened"))
    ok, figures = judge_sessions(other_lost, OWNERS, "mcp-0", fault=5)
    assert not ok and figures["others_ended"] == 1
    failed = session_events((1, 0, "s1", "opened"), (1, 1, "s2", "opened"), (6, 0, "s1", "ended"),
                            (6.1, 0, "s3", "opened"), (7, 1, "s2", "failed"))
    assert not judge_sessions(failed, OWNERS, "mcp-0", fault=5)[0]


def test_sessions_kept_through_reloads():
    assert judge_sessions_kept(session_events((1, 0, "s1", "opened"), (1, 1, "s2", "opened")))[0]
    assert not judge_sessions_kept(session_events((1, 0, "s1", "opened"), (3, 0, "s1", "ended")))[0]
    assert not judge_sessions_kept([])[0]  # no session held: nothing was shown


def test_jobs_every_acknowledged_one_done_once():
    acknowledged = {"a": 1.0, "b": 1.0}
    done = {"a": {"status": "done", "result": {"slept_s": 1.002}, "attempts": 1},
            "b": {"status": "done", "result": {"slept_s": 1.001}, "attempts": 2}}
    ok, figures = judge_jobs(acknowledged, done)
    assert ok and figures["done"] == 2 and figures["rerun"] == 1 and figures["lost"] == 0
    ok, figures = judge_jobs(acknowledged, {"a": done["a"], "b": {"status": "running", "attempts": 1}})
    assert not ok and figures["lost"] == 1 and figures["first_lost"] == ["b: running"]
    assert not judge_jobs(acknowledged, {**done, "b": {"status": "done", "result": {"slept_s": 0.1}}})[0]
