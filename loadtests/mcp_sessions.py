"""Locust users that each hold one MCP session through the proxy's edge, for the chaos experiments
(meshspec.chaos): initialize once, then tools/list in that session at MESH_RATE_PER_USER a second.

A session whose server forgot it (a replica killed: the restarted process, or the replica the proxy
sent it to instead, answers 404 as MCP's streamable HTTP says) ends cleanly: the user logs it and
initializes a new one, and that 404 is no failure. Anything else is: another status, a reply
without the tools, a JSON-RPC error. MESH_MCP_PATH is the route (/mcp/<name>); MESH_SESSION_LOG
gets one JSON line per session event ({"t", "user", "session", "event": opened|ended|failed}),
which the chaos probes judge against the proxy's stick table."""

from __future__ import annotations

import itertools
import json
import os
import time

import request_log  # noqa: F401  (MESH_REQUEST_LOG)
from edge_key import EDGE_HEADERS as EDGE
from locust import FastHttpUser, constant_throughput, task
from mcp_wire import initialize, post_headers, reply

PATH = os.environ.get("MESH_MCP_PATH", "/mcp/http")
SESSION_LOG = open(os.environ["MESH_SESSION_LOG"], "a", buffering=1) if os.environ.get("MESH_SESSION_LOG") else None
USERS = itertools.count()


def log_event(user: int, session: str | None, event: str, detail: str = "") -> None:
    if SESSION_LOG:
        SESSION_LOG.write(json.dumps({"t": time.time(), "user": user, "session": session, "event": event,
                                      **({"detail": detail} if detail else {})}) + "\n")


class SessionHolder(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("MESH_RATE_PER_USER", "5")))

    def on_start(self) -> None:
        self.user, self.session, self.calls = next(USERS), None, itertools.count(2)

    def on_stop(self) -> None:
        if self.session:
            self.client.delete(PATH, headers={**EDGE, "Mcp-Session-Id": self.session}, name="DELETE")

    def _open(self) -> None:
        with self.client.post(PATH, data=json.dumps(initialize("meshspec-chaos")), headers=post_headers(**EDGE),
                              name="initialize", catch_response=True) as r:
            session = r.headers.get("mcp-session-id")
            if r.status_code != 200 or not session or reply(r.headers.get("content-type", ""), r.text or "", 1) is None:
                r.failure(f"initialize: HTTP {r.status_code}: {(r.text or '')[:120]!r}")
                log_event(self.user, None, "failed", f"initialize HTTP {r.status_code}")
                return
        headers = post_headers(**EDGE, **{"Mcp-Session-Id": session})
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        with self.client.post(PATH, data=json.dumps(note), headers=headers, name="initialized",
                              catch_response=True) as r:
            if r.status_code not in (200, 202):
                r.failure(f"initialized: HTTP {r.status_code}")
                log_event(self.user, session, "failed", f"initialized HTTP {r.status_code}")
                return
        self.session = session
        log_event(self.user, session, "opened")

    @task
    def call(self) -> None:
        if self.session is None:
            self._open()
            return
        n = next(self.calls)
        body = {"jsonrpc": "2.0", "id": n, "method": "tools/list"}
        with self.client.post(PATH, data=json.dumps(body), headers=post_headers(**EDGE, **{"Mcp-Session-Id": self.session}),
                              name="tools/list", catch_response=True) as r:
            if r.status_code == 404:  # the server does not know the session: it ended; open another
                r.success()
                log_event(self.user, self.session, "ended")
                self.session = None
                return
            answer = reply(r.headers.get("content-type", ""), r.text or "", n)
            if r.status_code != 200 or answer is None or not answer.get("result", {}).get("tools"):
                r.failure(f"tools/list: HTTP {r.status_code}: {(r.text or '')[:120]!r}")
                log_event(self.user, self.session, "failed", f"tools/list HTTP {r.status_code}")
