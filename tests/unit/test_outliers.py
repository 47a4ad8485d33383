"""Outlier ejection's pure part: `show stat` rows in, the servers to eject out."""

from __future__ import annotations

from meshspec.runtime.proxy.outliers import Outliers, ServerStats, breakers_of, on_lost_hosts, parse_stat, rejoined

STAT = """# pxname,svname,qcur,status,wretr,wredis,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,type,addr
svc_api,api-local-0,0,UP,3,1,0,120,2,5,9,2,
svc_api,api-local-1,0,UP 1/2,0,0,0,80,0,0,0,2,
svc_api,spare-1,0,MAINT,0,0,0,0,0,0,0,2,
svc_api,BACKEND,0,UP,3,1,0,200,2,5,9,1,
"""


def row(name: str, failed: int, answered: int, up: bool = True, backend: str = "svc_api") -> ServerStats:
    return ServerStats(backend, name, failed, answered, up)


def test_parse_stat_reads_servers_only():
    assert parse_stat(STAT) == [row("api-local-0", 4, 127), row("api-local-1", 0, 80),
                                ServerStats("svc_api", "spare-1", 0, 0, False, maint=True)]


def test_breakers_of_reads_the_shape():
    shape = {"backends": {"svc_a": {"routing": {"circuit_breaker": {"enabled": True, "errors": 5}}},
                          "svc_b": {"routing": {"circuit_breaker": {"enabled": False, "errors": 5}}}}}
    assert breakers_of(shape) == {"svc_a": 5}


def replay(reads: list[list[ServerStats]], errors: int = 3) -> list[list[tuple[str, str]]]:
    outliers = Outliers()
    return [outliers.update(stats, {"svc_api": errors}) for stats in reads]


def test_failures_in_a_row_eject_once():
    reads = [[row("a", 0, 10), row("b", 0, 10)],
             [row("a", 1, 10), row("b", 0, 15)],
             [row("a", 3, 10), row("b", 0, 20)],  # 3 failures, no answer between: out
             [row("a", 9, 10), row("b", 0, 25)]]  # counted again from zero after the ejection
    assert replay(reads) == [[], [], [("svc_api", "a")], [("svc_api", "a")]]


def test_an_answer_restarts_the_count():
    reads = [[row("a", 0, 10), row("b", 0, 10)],
             [row("a", 2, 10), row("b", 0, 15)],
             [row("a", 3, 11), row("b", 0, 20)],  # it answered: only this read's failure counts
             [row("a", 4, 11), row("b", 0, 25)]]
    assert replay(reads) == [[], [], [], []]


def test_never_the_last_server_in_rotation():
    reads = [[row("a", 0, 10), row("b", 0, 10, up=False)],
             [row("a", 5, 10), row("b", 0, 10, up=False)]]
    assert replay(reads) == [[], []]
    both = [[row("a", 0, 1), row("b", 0, 1)], [row("a", 5, 1), row("b", 5, 1)]]
    assert replay(both) == [[], [("svc_api", "a")]]


def test_a_reload_resets_the_counters_and_other_backends_are_left_alone():
    reads = [[row("a", 7, 10), row("b", 0, 10), row("x", 0, 0, backend="svc_other")],
             [row("a", 0, 0), row("b", 0, 0), row("x", 50, 0, backend="svc_other")],  # a new process
             [row("a", 2, 0), row("b", 0, 3), row("x", 99, 0, backend="svc_other")]]
    assert replay(reads) == [[], [], []]


def test_every_server_of_a_host_whose_proxy_fails_its_check_goes_the_last_too():
    """h3's proxy fails the check of h1's proxy: every server of a routed service at h3's address
    leaves rotation (the only one of svc_b too); h2's stay, and so does the check's own server."""
    stat = """# pxname,svname,status,wretr,wredis,type,addr
peer_h2,mesh-proxy-h2-0,UP,0,0,2,10.0.0.3:9016
peer_h3,mesh-proxy-h3-0,DOWN,0,0,2,10.0.0.4:9016
svc_a,a-h2-1,UP,0,0,2,10.0.0.3:9016
svc_a,a-h3-2,UP,0,0,2,10.0.0.4:9016
svc_a,a-h1-0,UP,0,0,2,10.0.0.2:5000
svc_b,b-h3-0,UP,0,0,2,10.0.0.4:9016
svc_c,c-h3-0,DOWN,0,0,2,10.0.0.4:9016
"""
    shape = {"backends": {"svc_a": {}, "svc_b": {}, "svc_c": {}},
             "peers": {"hosts": {"peer_h2": "10.0.0.3", "peer_h3": "10.0.0.4"}}}
    assert on_lost_hosts(parse_stat(stat), shape) == [("svc_a", "a-h3-2"), ("svc_b", "b-h3-0")]
    assert on_lost_hosts(parse_stat(stat), {"backends": shape["backends"]}) == []  # one host: no peers


def test_a_server_ejected_for_its_host_s_loss_is_put_back_when_that_host_returns():
    """h3's proxy passes its check again: its servers the controller ejected come back at once, but
    not one the registry put in maintenance meanwhile, nor one HAProxy's checks already brought
    back; h2 is still lost, so its server stays out."""
    stat = """# pxname,svname,status,wretr,wredis,type,addr
peer_h2,mesh-proxy-h2-0,DOWN,0,0,2,10.0.0.3:9016
peer_h3,mesh-proxy-h3-0,UP,0,0,2,10.0.0.4:9016
svc_a,a-h2-1,DOWN,0,0,2,10.0.0.3:9016
svc_a,a-h3-2,DOWN,0,0,2,10.0.0.4:9016
svc_b,b-h3-0,MAINT,0,0,2,10.0.0.4:9016
svc_c,c-h3-0,UP,0,0,2,10.0.0.4:9016
"""
    shape = {"backends": {"svc_a": {}, "svc_b": {}, "svc_c": {}},
             "peers": {"hosts": {"peer_h2": "10.0.0.3", "peer_h3": "10.0.0.4"}}}
    ejected = {("svc_a", "a-h2-1"): "10.0.0.3", ("svc_a", "a-h3-2"): "10.0.0.4", ("svc_b", "b-h3-0"): "10.0.0.4",
               ("svc_c", "c-h3-0"): "10.0.0.4", ("svc_a", "a-gone-9"): "10.0.0.4"}
    assert rejoined(ejected, parse_stat(stat), shape) == [("svc_a", "a-h3-2")]
