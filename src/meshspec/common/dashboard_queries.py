"""The dashboard's panels: what each one measures, as PromQL over what the mesh's Prometheus scrapes.

One home for both consumers: backend-api's `GET /api/v1/mesh/metrics` (the frontend's dashboard
view) runs them against the mesh's own Prometheus, and `render/grafana.py` writes them into a
Grafana dashboard. Every series comes from HAProxy's built-in exporter (job of the proxy's service):
the proxy counts per destination (backend), so each series is one service's traffic from all its
callers together. HAProxy 2.6's exporter has no latency histogram: the p50 and p99 come from the
one mesh-controller keeps of every answer in HAProxy's request log
(`meshspec_proxy_request_duration_seconds`, runtime/proxy/request_log.py), interpolated within its
buckets as `histogram_quantile` does.
"""

from __future__ import annotations

from dataclasses import dataclass

# HAProxy's backend of each routed service is `svc_<service>` (render/haproxy.py's backend_name);
# the unit test of the Grafana export holds the two together. Other proxies of HAProxy's (the
# listeners, the stats page, the rate-limit tables) are not services.
SERVICE_BACKEND = "svc_"
# The window the dashboard shows, and its resolution: 121 points a series.
WINDOW_S = 3600
STEP_S = 30
# rate() over four scrapes (Prometheus scrapes every 15 s: render/monitoring.py)
RATE_WINDOW = "1m"


@dataclass(frozen=True)
class Panel:
    """One chart: one series per service."""

    id: str
    title: str
    unit: str  # Grafana's unit id; the frontend formats the same three
    caption: str  # what the series is, in the words the page and Grafana show
    expr: str  # PromQL with `{sel}` for the selector of the services' backends


def _by_service(expr: str) -> str:
    """`expr` aggregated by backend, with the service's name as its own label."""
    return f'label_replace({expr}, "service", "$1", "proxy", "{SERVICE_BACKEND}(.+)")'


def _rate(metric: str, extra: str = "") -> str:
    return "sum by (proxy) (rate(" + metric + "{{sel}" + extra + "}[" + RATE_WINDOW + "]))"


def _quantile(q: float) -> str:
    """The q-quantile of the answers' durations in the rate window, all proxies' together; none for a
    service that answered nothing in it (as with the error ratio)."""
    window = "[" + RATE_WINDOW + "]"
    return _by_service(f"histogram_quantile({q}, sum by (proxy, le) (rate("
                       "meshspec_proxy_request_duration_seconds_bucket{{sel}}" + window + "))) and on (proxy) ("
                       "sum by (proxy) (rate(meshspec_proxy_request_duration_seconds_count{{sel}}" + window + ")) > 0)")


PANELS: tuple[Panel, ...] = (
    Panel("requests", "Request rate", "reqps",
          "HTTP requests per second into the service through the proxy, from all its callers",
          _by_service(_rate("haproxy_backend_http_requests_total"))),
    # A service without answers in the window has no ratio (absent), not 0/0.
    Panel("errors", "Error ratio", "percentunit",
          "share of the service's answers through the proxy that were 5xx (no point: no answers)",
          _by_service(_rate("haproxy_backend_http_responses_total", ', code="5xx"') + " / ("
                      + _rate("haproxy_backend_http_responses_total") + " > 0)")),
    Panel("p50", "p50 latency", "s",
          "half of the service's answers through the proxy took at most this, from the request "
          "received to the answer's headers sent (no point: no answers)", _quantile(0.5)),
    Panel("p99", "p99 latency", "s",
          "99% of the service's answers through the proxy took at most this (its SLO alert counts "
          "the answers over the SLO exactly; this is interpolated within the histogram's buckets)",
          _quantile(0.99)),
)


#: The topology's edges now: each caller's request rate into each service, as the controller counts
#: them (the caller the proxy named: the service its certificate names, the consumer its key names).
EDGES = Panel("edges", "Request rate by caller", "reqps",
              "HTTP requests per second from each caller into each service through the proxy",
              _by_service("sum by (proxy, caller) (rate(meshspec_proxy_caller_requests_total{{sel}}["
                          + RATE_WINDOW + "]))"))


def selector(mesh: str | None = None) -> str:
    """The services' backends, of one mesh when `mesh` is given (a Prometheus scraping several)."""
    backends = f'proxy=~"{SERVICE_BACKEND}.+"'
    return f'mesh="{mesh}", {backends}' if mesh else backends


def expression(panel: Panel, mesh: str | None = None) -> str:
    return panel.expr.replace("{sel}", selector(mesh))


def firing_alerts(mesh: str) -> str:
    """The mesh's alerts that fire, as Prometheus keeps them (the page reads the same from
    Alertmanager): every rule of the mesh's keeps the `mesh` label (render/monitoring.py)."""
    return f'ALERTS{{mesh="{mesh}", alertstate="firing"}}'
