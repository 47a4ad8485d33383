"""With MESH_REQUEST_LOG, each request's start time, duration in ms and outcome (1 answered, 0 not)
go to that file, one line each, for the chaos plots: Locust's own history averages over seconds and
repeats its last figure while every user waits on a hung server. Imported by the chaos locustfiles;
several Locust processes may append to one file (one short line per write)."""

from __future__ import annotations

import os

from locust import events

REQUEST_LOG = os.environ.get("MESH_REQUEST_LOG")

if REQUEST_LOG:
    _log = open(REQUEST_LOG, "a", buffering=1)

    @events.request.add_listener
    def _record(response_time: float, exception: Exception | None, start_time: float = 0.0, **_: object) -> None:
        _log.write(f"{start_time:.3f},{response_time:.1f},{0 if exception else 1}\n")
