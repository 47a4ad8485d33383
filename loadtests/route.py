"""Locust on routes through the proxy's edge, for the chaos experiments (meshspec.chaos).

MESH_ROUTES is a JSON list of {"path", "expect"}; each user requests them in turn with the API key
in MESH_API_KEY_FILE (a consumer's; read from its 0600 file, never passed in the environment) and
counts an answer only with status 200 and the route's `expect` in its body: the service's own
words, not the proxy's. With MESH_REQUEST_LOG, each request goes to that file (request_log.py).
"""

from __future__ import annotations

import itertools
import json
import os

import request_log  # noqa: F401  (MESH_REQUEST_LOG)
from edge_key import EDGE_HEADERS
from locust import FastHttpUser, constant_throughput, task


class RouteCaller(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("MESH_RATE_PER_USER", "20")))
    routes = json.loads(os.environ["MESH_ROUTES"])

    def on_start(self) -> None:
        self.turns = itertools.cycle(self.routes)

    @task
    def call(self) -> None:
        route = next(self.turns)
        with self.client.get(route["path"], headers=EDGE_HEADERS, name=route["path"], catch_response=True) as response:
            if response.status_code != 200 or route["expect"] not in (response.text or ""):
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:120]!r}")
