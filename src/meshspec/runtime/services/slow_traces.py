"""backend-api's slowest traced requests of the last hour, for the dashboard: `GET
/api/v1/mesh/traces/slow?limit=N`, read from the mesh's trace store (Phoenix) through the mesh, as
the dashboard's series are read from Prometheus (dashboard.py).

Phoenix ranks a project's traces by latency itself (`/v1/projects/<project>/traces?sort=latency_ms`):
a trace's latency runs from its first span's start to its last span's end, over the spans
meshspec's own services sent. The proxy sends none, so its own time is not counted; a job's trace
runs on to the end of the worker's run. Each trace is named by its entry span: the outermost one
the services sent, whose parent (the proxy's or the caller's traceparent) is in no span of the
trace; its attributes name the service and instance that made it (tracing.py).

Only sampled requests have a trace (the spec's `tracing.sampling` at the proxy's edge, or the
caller's own traceparent): this lists the slowest traced requests, not the slowest requests.

Each trace links to Phoenix's own UI (`/projects/<project id>/traces/<trace id>`, the page its trace
view has) at the address the registry gives Phoenix's passing instance: the browser that follows
it must reach that address, which the proxy does not relay.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from meshspec.runtime.services.dashboard import PLAIN
from meshspec.runtime.services.mesh_client import ConsulReader, MeshError, MeshRequest, MeshRouter, describe_instance

# The trace store, as the shipped spec names it, and the project meshspec's services send to
# (their exporter names none, so Phoenix files them under its default project).
PHOENIX = "phoenix"
PROJECT = "default"
WINDOW_S = 3600
DEFAULT_LIMIT, MAX_LIMIT = 10, 50
# Two reads one after the other, and the registry's beside the first, within the proxy's request
# timeout of backend-api (2 s in the shipped spec).
QUERY_TIMEOUT_S = 0.8
# The ratio backend-api's own sampler applies, which the deploy renders from the same
# `tracing.sampling` the proxy's edge samples with (render/programs.tracing_env).
SAMPLING_ENV = "OTEL_TRACES_SAMPLER_ARG"


class TracesUnreadable(Exception):
    """Phoenix answered, but not with what was asked."""


def entry_span(spans: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The outermost span of one trace: its parent is no span of the trace (the earliest such one,
    should the services have sent more than one, as a caller's several requests under one
    traceparent do)."""
    ids = {s["span_id"] for s in spans}
    entries = [s for s in spans if s.get("parent_id") not in ids]
    return min(entries, key=lambda s: (_instant(s["start_time"]), s["span_id"]), default=None)


def _instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def trace_link(ui: str | None, project_id: str, trace_id: str) -> str | None:
    """Phoenix's page of one trace, or None without an address to link to."""
    return f"{ui}/projects/{quote(project_id, safe='')}/traces/{quote(trace_id, safe='')}" if ui else None


def slow_rows(traces: list[dict[str, Any]], entries: dict[str, dict[str, Any]], ui: str | None) -> list[dict[str, Any]]:
    """Phoenix's traces, slowest first as it ranked them, each with its entry span (`entries`: by
    span id, as Phoenix's spans API gives them, attributes included) → the rows the page lists."""
    rows = []
    for trace in traces:
        entry = entry_span(trace.get("spans") or [])
        span = entries.get(entry["span_id"]) if entry else None
        attributes = span.get("attributes", {}) if span else {}
        duration = _instant(trace["end_time"]) - _instant(trace["start_time"])
        rows.append({"trace_id": trace["trace_id"], "duration_ms": round(duration.total_seconds() * 1000, 1),
                     "start_time": trace["start_time"], "spans": len(trace.get("spans") or []),
                     "span": entry["name"] if entry else None,
                     "service": attributes.get("service.name"), "instance": attributes.get("service.instance.id"),
                     "link": trace_link(ui, trace["project_id"], trace["trace_id"])})
    return rows


def phoenix_ui(entries: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """The registry's passing instances of the trace store → (its UI's base URL, None), or (None,
    why there is no link): every instance keeps its own spans, so with several a link could lead
    to one that never saw the trace."""
    if len(entries) != 1:
        return None, f"the registry has {len(entries)} passing instances of the trace store, not one"
    inst = describe_instance(entries[0])
    host = f"[{inst['address']}]" if ":" in inst["address"] else inst["address"]
    return f"http://{host}:{inst['port']}", None


def data_of(body: str) -> list[dict[str, Any]]:
    """One of Phoenix's paginated answers → its page."""
    answer = json.loads(body)
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise TracesUnreadable(f"no list of data in {body[:120]!r}")
    return answer["data"]


def limit_of(query: dict[str, str]) -> int:
    """`?limit=` as a whole number from 1 to MAX_LIMIT; a 400 otherwise."""
    try:
        limit = int(query.get("limit", str(DEFAULT_LIMIT)))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"limit must be a whole number from 1 to {MAX_LIMIT}"}),
                                 content_type="application/json")
    return limit


class SlowTraces:
    """The handler; `router` and `consul` give backend-api's, which exist once its app started."""

    def __init__(self, router: Callable[[], MeshRouter], consul: Callable[[], ConsulReader],
                 service: str = PHOENIX) -> None:
        self.router = router
        self.consul = consul
        self.service = service

    async def _read(self, path: str) -> list[dict[str, Any]]:
        # as the dashboard's reads of Prometheus: Phoenix too gzips what a client accepts gzipped
        answer = await self.router().send(MeshRequest(service=self.service, path=path, headers=PLAIN,
                                                      timeout_s=QUERY_TIMEOUT_S))
        if answer.status != 200:
            raise TracesUnreadable(f"HTTP {answer.status} to {path.split('?')[0]}: {answer.body[:200]}")
        return data_of(answer.body)

    async def _ui(self) -> tuple[str | None, str | None]:
        try:
            return phoenix_ui(await asyncio.wait_for(self.consul().health_service(self.service, passing=True),
                                                     QUERY_TIMEOUT_S))
        except (MeshError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
            return None, f"the registry did not say where {self.service} is ({exc.__class__.__name__}: {exc})"

    async def _entries(self, traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The traces' entry spans with their attributes, which Phoenix's traces API leaves out."""
        wanted = [e["span_id"] for e in (entry_span(t.get("spans") or []) for t in traces) if e]
        if not wanted:
            return []
        return await self._read(f"/v1/projects/{PROJECT}/spans?"
                                + urlencode([("span_id", s) for s in wanted] + [("limit", len(wanted))]))

    async def slow(self, request: web.Request) -> web.Response:
        limit = limit_of(request.query)
        start = datetime.fromtimestamp(time.time() - WINDOW_S, timezone.utc)
        ranked = urlencode({"sort": "latency_ms", "order": "desc", "start_time": start.isoformat(),
                            "limit": limit, "include_spans": "true"})
        try:
            traces, (ui, no_link) = await asyncio.gather(
                self._read(f"/v1/projects/{PROJECT}/traces?{ranked}"), self._ui())
            spans = await self._entries(traces)
            rows = slow_rows(traces, {s["context"]["span_id"]: s for s in spans}, ui)
        except (TracesUnreadable, ValueError, TypeError, KeyError) as exc:
            return web.json_response({"error": f"{self.service} did not answer with its traces ({exc})"}, status=502)
        return web.json_response({"window": {"start": start.isoformat(), "seconds": WINDOW_S}, "traces": rows,
                                  "phoenix": ui, "no_link": no_link, "sampling": os.environ.get(SAMPLING_ENV)})
