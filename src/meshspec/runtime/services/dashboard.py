"""backend-api's side of the dashboard: `GET /api/v1/mesh/metrics`, the last hour of each panel of
`common/dashboard_queries.py`, read from the mesh's Prometheus through the mesh (as its alerts are
read from Alertmanager: the proxy's mTLS listener, intentions decide).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any, Callable
from urllib.parse import urlencode

from aiohttp import web

from meshspec.common.dashboard_queries import EDGES, PANELS, STEP_S, WINDOW_S, Panel, expression
from meshspec.runtime.services.mesh_client import MeshRequest, MeshResponse, MeshRouter

# The service whose query API answers, as the shipped spec names it.
PROMETHEUS = "prometheus"
# backend-api's client leaves bodies as they come (it relays them), and Prometheus gzips what a
# client accepts gzipped, as aiohttp's does by default.
PLAIN = {"Accept-Encoding": "identity"}
# The panels' queries run side by side; each must answer within the proxy's request timeout of
# backend-api (2 s in the shipped spec), or the proxy retries the whole page elsewhere.
QUERY_TIMEOUT_S = 1.5


class MetricsUnreadable(Exception):
    """Prometheus answered, but not with a range query's result."""


def series_of(body: str) -> list[dict[str, Any]]:
    """A `query_range` answer → [{"service", "points": [[unix s, value], ...]}], by service (and its
    "caller" too, in a series of one caller's requests).

    Points that are no number (NaN, ±Inf) are left out: JSON has no spelling for them, and a
    chart has no place to draw them."""
    answer = json.loads(body)
    if answer.get("status") != "success" or answer["data"]["resultType"] != "matrix":
        raise MetricsUnreadable(answer.get("error") or f"a {answer['data']['resultType']}, not a matrix")
    found = []
    for result in answer["data"]["result"]:
        points = [[float(t), float(v)] for t, v in result["values"] if math.isfinite(float(v))]
        caller = {"caller": result["metric"]["caller"]} if "caller" in result["metric"] else {}
        found.append({"service": result["metric"]["service"], **caller, "points": points})
    return sorted(found, key=lambda s: (s["service"], s.get("caller", "")))


class Dashboard:
    """The handler; `router` gives backend-api's mesh client, which exists once its app started."""

    def __init__(self, router: Callable[[], MeshRouter], service: str = PROMETHEUS) -> None:
        self.router = router
        self.service = service

    async def _range(self, panel: Panel, start: float, end: float) -> MeshResponse:
        query = urlencode({"query": expression(panel), "start": f"{start:.0f}", "end": f"{end:.0f}", "step": STEP_S})
        return await self.router().send(
            MeshRequest(service=self.service, path=f"/api/v1/query_range?{query}", headers=PLAIN,
                        timeout_s=QUERY_TIMEOUT_S))

    async def metrics(self, request: web.Request) -> web.Response:
        end = time.time()
        start = end - WINDOW_S
        queried = (*PANELS, EDGES)
        answers = await asyncio.gather(*(self._range(p, start, end) for p in queried))
        drawn = {}
        for panel, answer in zip(queried, answers):
            try:
                if answer.status != 200:
                    raise MetricsUnreadable(f"HTTP {answer.status}")
                series = series_of(answer.body)
            except (MetricsUnreadable, ValueError, TypeError, KeyError) as exc:
                return web.json_response({"error": f"{self.service} did not answer the {panel.id} query ({exc})",
                                          "route": answer.route.model_dump()}, status=502)
            drawn[panel.id] = {"id": panel.id, "title": panel.title, "unit": panel.unit, "caption": panel.caption,
                               "query": expression(panel), "series": series}
        edges = drawn.pop(EDGES.id)  # the topology's, per caller: no chart of its own
        return web.json_response({"window": {"start": start, "end": end, "step": STEP_S}, "panels": list(drawn.values()),
                                  "edges": edges, "source": answers[0].route.model_dump()})
