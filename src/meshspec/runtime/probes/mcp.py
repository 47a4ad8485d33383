"""A protocol-level health probe for MCP servers speaking Streamable HTTP.

One probe (``probe_mcp``) is one short MCP session, as a client would open it:

1. POST ``initialize`` (empty client capabilities, the newest handshake-era protocol version);
   read ``Mcp-Session-Id`` from the response;
2. POST ``notifications/initialized``;
3. POST ``tools/list``, following ``nextCursor`` until the last page;
4. DELETE the session, when the server issued one, so health checks never leak sessions.

A prober that comes back every interval (the host's checker) keeps one session instead
(``KeptSession``): steps 1-3 once, then one ``tools/list`` on that session per probe, and the DELETE
when it stops. Of a probe's four requests one is left, and the server builds no session per interval.

Responses may be ``application/json`` or ``text/event-stream`` (the JSON-RPC response with the
matching id is picked out of the ``data:`` lines). A process that answers HTTP but not MCP fails the
probe with a one-line reason naming the step, e.g. ``127.0.0.1:PORT answers HTTP 404 but not MCP
initialize``.

The client is hand-rolled on httpx on purpose: it names precisely which step failed and does not
depend on the version of the ``mcp`` SDK.
"""

from __future__ import annotations

import functools
import json
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

#: What this client offers in ``initialize``: the newest revision reachable by the handshake.
CLIENT_PROTOCOL_VERSION = "2025-11-25"
#: The oldest revision a server may answer with; anything this old or newer (date-shaped) is accepted.
OLDEST_PROTOCOL_VERSION = "2024-11-05"
CLIENT_INFO = {"name": "meshspec-probe", "version": "1"}
MAX_PAGES = 100
#: Seconds a DELETE may take even when the probe has run out of time: ending the session matters more.
DELETE_GRACE = 0.5
_DATE_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class McpResult:
    """The outcome of one probe. ``reason`` is one line: the summary when ok, the failure otherwise."""

    ok: bool
    reason: str
    protocol_version: str | None = None
    server_name: str | None = None
    tool_count: int | None = None
    tools: tuple[str, ...] = ()
    elapsed_ms: float = 0.0
    #: The step that failed (connect, initialize, notifications/initialized, tools/list, delete), or None.
    step: str | None = None


class ProbeFailed(Exception):
    """One step of the probe failed; ``str(self)`` is the one-line reason."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(_one_line(reason))
        self.step = step


def accepts_protocol_version(version: object) -> bool:
    """True for the revisions the probe accepts: 2024-11-05, 2025-03-26, 2025-06-18 and any newer date."""
    return isinstance(version, str) and bool(_DATE_VERSION.match(version)) and version >= OLDEST_PROTOCOL_VERSION


def normalize_url(url: str) -> str:
    """``host:port`` → ``http://host:port/mcp``; a URL with a scheme and a path is kept as it is."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/mcp")
    return urlunsplit(parts)


def probe_mcp(url: str, timeout: float = 5.0, min_tools: int = 1, list_tools: bool = True,
              headers: dict[str, str] | None = None) -> McpResult:
    """Run one MCP handshake + tools/list against ``url`` and end the session; never raises for server faults.

    + url: the Streamable HTTP endpoint, e.g. ``http://HOST:PORT/mcp`` (a bare ``HOST:PORT`` gets ``/mcp``)
    + timeout: seconds for the whole probe (each request gets what is left)
    + min_tools: the probe fails when the server lists fewer tools
    + list_tools: False skips tools/list (and min_tools): the handshake alone names the server that
      answered, which is what a route needs to show; a catalogue of hundreds of tools is most of a
      probe's cost on both sides
    + headers: sent with every request (the proxy's edge asks a consumer's `X-API-Key`)

    Example: ``probe_mcp(f"http://127.0.0.1:{port}/mcp").ok``
    """
    started = time.monotonic()
    url = normalize_url(url)
    with _client(url, headers) as client:
        probe = _Probe(url, deadline=started + timeout, timeout=timeout, client=client, listed=list_tools)
        failure: ProbeFailed | None = None
        try:
            probe.run()
        except ProbeFailed as failed:
            failure = failed
        try:
            probe.end_session()  # also after a failed step: a probe never leaves a session behind
        except ProbeFailed as failed:
            failure = failure or failed
    return probe.verdict(started, min_tools, failure)


class KeptSession:
    """One MCP session kept open across probes, for a prober that comes back every interval.

    The first probe runs the handshake (initialize, notifications/initialized, tools/list) and keeps
    the session the server issued; each later probe is one tools/list on it: the server's own answer,
    listing its tools, without a session built and torn down every interval (most of what a probe
    cost an idle server, measured on mcp-proxy). Any failure on the kept session ends it and, while
    the probe has time left, runs a fresh handshake at once: a restarted server, which no longer
    knows the session, passes on a new one; a process that is not an MCP server fails the handshake
    as it fails ``probe_mcp``. A server that issues no session id gets the whole handshake each time.
    ``close()`` ends the session. Not thread-safe: one prober owns it.

    Example: ``kept = KeptSession(url); kept.probe(timeout=5).ok; ...; kept.close()``
    """

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self._client = _client(self.url)
        self._kept: _Probe | None = None
        self._since = ""  # when the kept session was opened, as the probe's output says it

    def probe(self, timeout: float = 5.0, min_tools: int = 1) -> McpResult:
        """One probe, within ``timeout`` seconds; never raises for server faults."""
        started = time.monotonic()
        deadline = started + timeout
        if self._kept is not None:
            kept = self._kept
            kept.deadline, kept.timeout, kept.tools = deadline, timeout, []
            try:
                kept.list_tools()
            except ProbeFailed as failed:
                self._end()
                if deadline - time.monotonic() < MIN_FRESH_SECONDS:
                    return kept.verdict(started, min_tools, ProbeFailed(failed.step, f"{failed} (kept session)"))
            else:
                return kept.verdict(started, min_tools, None, f" on the session kept since {self._since}")
        fresh = _Probe(self.url, deadline=deadline, timeout=timeout, client=self._client)
        try:
            fresh.run()
        except ProbeFailed as failed:
            _end_quietly(fresh)
            return fresh.verdict(started, min_tools, failed)
        if fresh.session_id is not None:
            self._kept, self._since = fresh, time.strftime("%H:%M:%SZ", time.gmtime())
        return fresh.verdict(started, min_tools, None, " on a new session" if self._kept is fresh else "")

    def close(self) -> None:
        """End the kept session (DELETE) and the client's connections."""
        self._end()
        self._client.close()

    def _end(self) -> None:
        if self._kept is not None:
            kept, self._kept = self._kept, None
            kept.deadline = time.monotonic()  # the DELETE gets DELETE_GRACE: ending the session matters more
            _end_quietly(kept)


#: The least time left after a kept session failed for a fresh handshake to be worth trying.
MIN_FRESH_SECONDS = 0.5


def _client(url: str, headers: dict[str, str] | None = None) -> httpx.Client:
    # Building a verifying TLS context costs ~20 ms: plain http needs none, https reuses one.
    verify = _tls_context() if urlsplit(url).scheme == "https" else False
    # Idle connections are dropped after a second: a server closes its own after a few (uvicorn: 5 s),
    # and a probe that came back 10 s later must not race that close on a stale connection.
    return httpx.Client(trust_env=False, follow_redirects=False, verify=verify, headers=headers,
                        limits=httpx.Limits(keepalive_expiry=1.0))


def _end_quietly(probe: _Probe) -> None:
    """End a session whose probe already has its verdict: a DELETE that fails changes nothing."""
    try:
        probe.end_session()
    except ProbeFailed:
        pass


@dataclass
class _Probe:
    url: str
    deadline: float
    timeout: float
    client: httpx.Client | None = None
    session_id: str | None = None
    protocol_version: str | None = None
    server_name: str | None = None
    tools: list[str] = field(default_factory=list)
    listed: bool = True  # False: the handshake only, no tools/list
    next_id: int = 0

    @property
    def where(self) -> str:
        return urlsplit(self.url).netloc

    def fail(self, step: str, what: str) -> ProbeFailed:
        """The failure of ``step``; its reason is ``HOST:PORT what``."""
        return ProbeFailed(step, f"{self.where} {what}")

    def result(self, ok: bool, reason: str, started: float, step: str | None) -> McpResult:
        return McpResult(
            ok=ok,
            reason=reason,
            protocol_version=self.protocol_version,
            server_name=self.server_name,
            tool_count=len(self.tools) if self.protocol_version is not None and self.listed else None,
            tools=tuple(self.tools),
            elapsed_ms=round((time.monotonic() - started) * 1000, 2),
            step=step,
        )

    def verdict(self, started: float, min_tools: int, failure: ProbeFailed | None, session: str = "") -> McpResult:
        """The result of a probe that ended, with ``failure`` or without; ``session`` says on which session."""
        if failure is None and self.listed and len(self.tools) < min_tools:
            failure = self.fail("tools/list", f"lists {len(self.tools)} tools, fewer than the {min_tools} required")
        if failure is not None:
            return self.result(False, str(failure), started, failure.step)
        elapsed = (time.monotonic() - started) * 1000
        listed = f"{len(self.tools)} tools" if self.listed else "handshake"
        summary = _one_line(f"{self.server_name} protocol {self.protocol_version}, {listed} in {elapsed:.0f} ms{session}")
        return self.result(True, summary, started, None)

    # --- the steps -------------------------------------------------------------------------------

    def run(self) -> None:
        init = self.request("initialize", {
            "protocolVersion": CLIENT_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": CLIENT_INFO,
        })
        version = init.get("protocolVersion")
        if not accepts_protocol_version(version):
            raise self.fail("initialize", f"answered initialize with unsupported protocol version {version!r}")
        self.protocol_version = version
        info = init.get("serverInfo")
        self.server_name = str(info.get("name")) if isinstance(info, dict) and info.get("name") else "unnamed"

        self.notify("notifications/initialized")
        if self.listed:
            self.list_tools()

    def list_tools(self) -> None:
        """tools/list, following ``nextCursor`` until the last page, into ``self.tools``."""
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = self.request("tools/list", {"cursor": cursor} if cursor else None)
            listed = page.get("tools")
            if not isinstance(listed, list):
                raise self.fail("tools/list", "answered tools/list without a tools array")
            self.tools.extend(str(t.get("name")) if isinstance(t, dict) else "?" for t in listed)
            cursor = page.get("nextCursor")
            if not cursor:
                return
        raise self.fail("tools/list", f"tools/list pagination did not end after {MAX_PAGES} pages")

    def end_session(self) -> None:
        """DELETE the session. 404 (already gone) and 405 (server does not let clients end sessions) are fine."""
        if self.session_id is None or self.client is None:
            return
        timeout = max(self.deadline - time.monotonic(), DELETE_GRACE)
        try:
            response = self.client.delete(self.url, headers=self.headers(), timeout=timeout)
        except httpx.HTTPError as err:
            raise self.fail("delete", f"session not deleted: {_describe(err)}") from err
        if response.status_code not in (200, 202, 204, 404, 405):
            raise self.fail("delete", f"session not deleted: DELETE answered HTTP {response.status_code}")

    # --- transport -------------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.protocol_version is not None:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    def remaining(self, step: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.fail(step, f"timed out after {self.timeout:g} s before {step}")
        return left

    def notify(self, method: str) -> None:
        message = {"jsonrpc": "2.0", "method": method}
        with self.post(method, message) as response:
            if not 200 <= response.status_code < 300:
                raise self.fail(method, f"answered {method} with HTTP {response.status_code}")

    def request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        self.next_id += 1
        rpc_id = self.next_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
        if params is not None:
            message["params"] = params
        with self.post(method, message) as response:
            if method == "initialize":
                if response.status_code != 200:
                    detail = _error_detail(self.read_body(method, response))
                    status = response.status_code
                    if detail:  # an MCP server that refuses (e.g. 503 too many sessions, 400 bad version)
                        raise self.fail(method, f"refused initialize with HTTP {status}{detail}")
                    raise self.fail(method, f"answers HTTP {status} but not MCP initialize")
                self.session_id = response.headers.get("mcp-session-id")
            elif response.status_code != 200:
                detail = _error_detail(self.read_body(method, response))
                raise self.fail(method, f"answered {method} with HTTP {response.status_code}{detail}")
            reply = self.find_reply(method, rpc_id, response)
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            raise self.fail(method, f"{method} failed: JSON-RPC error {err.get('code')} {err.get('message')}")
        result = reply.get("result")
        if not isinstance(result, dict):
            raise self.fail(method, f"answered {method} without a result object")
        return result

    def post(self, step: str, message: dict[str, Any]):
        assert self.client is not None
        try:
            request = self.client.build_request("POST", self.url, json=message, headers=self.headers(),
                                                timeout=self.remaining(step))
            return _Closing(self.client.send(request, stream=True))
        except httpx.HTTPError as err:
            raise self.transport_failure(step, err) from err

    def transport_failure(self, step: str, err: httpx.HTTPError) -> ProbeFailed:
        if isinstance(err, httpx.TimeoutException):
            return self.fail(step, f"timed out after {self.timeout:g} s waiting for {step}")
        if isinstance(err, httpx.ConnectError):
            if "refused" in str(err).lower():
                return self.fail("connect", f"refused the connection ({step})")
            return self.fail("connect", f"cannot be reached ({step}): {_describe(err)}")
        return self.fail(step, f"failed during {step}: {_describe(err)}")

    def read_body(self, step: str, response: httpx.Response) -> bytes:
        try:
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                self.remaining(step)
                if len(body) > 1 << 20:
                    break
            return body
        except httpx.HTTPError as err:
            raise self.transport_failure(step, err) from err

    def find_reply(self, method: str, rpc_id: int, response: httpx.Response) -> dict[str, Any]:
        """The JSON-RPC response to ``rpc_id`` from a JSON body or an SSE stream."""
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        not_mcp = "but not MCP initialize" if method == "initialize" else f"to {method}"
        if content_type == "text/event-stream":
            try:
                for data in _sse_data(response.iter_lines(), lambda: self.remaining(method)):
                    try:
                        message = json.loads(data)
                    except ValueError:
                        continue
                    reply = _match(message, rpc_id)
                    if reply is not None:
                        return reply
            except httpx.HTTPError as err:
                raise self.transport_failure(method, err) from err
            raise self.fail(method, f"answers HTTP {response.status_code} {not_mcp}: "
                                      f"event stream ended without a JSON-RPC response")
        body = self.read_body(method, response)
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        reply = _match(message, rpc_id)
        if reply is None:
            raise self.fail(method, f"answers HTTP {response.status_code} {not_mcp}: body is not "
                                      f"JSON-RPC ({content_type or 'no content type'}: {_snippet(body)})")
        return reply


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


class _Closing:
    """``with`` over a streamed response: closes it (and frees the connection) on the way out."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    def __enter__(self) -> httpx.Response:
        return self.response

    def __exit__(self, *exc: object) -> None:
        self.response.close()


def _sse_data(lines: Iterator[str], check_deadline) -> Iterator[str]:
    """The data of each server-sent event: ``data:`` lines joined by newlines, dispatched at a blank line."""
    data: list[str] = []
    for line in lines:
        check_deadline()
        if line == "":
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _match(message: Any, rpc_id: int) -> dict[str, Any] | None:
    """The JSON-RPC response to ``rpc_id`` in a message or a batch; None if there is none."""
    candidates = message if isinstance(message, list) else [message]
    for item in candidates:
        if (isinstance(item, dict) and item.get("jsonrpc") == "2.0" and item.get("id") == rpc_id
                and ("result" in item or "error" in item)):
            return item
    return None


def _error_detail(body: bytes) -> str:
    """``: JSON-RPC error CODE MESSAGE`` when a rejected request still carries a JSON-RPC error."""
    try:
        message = json.loads(body)
    except ValueError:
        return ""
    if isinstance(message, dict) and isinstance(message.get("error"), dict):
        err = message["error"]
        return f": JSON-RPC error {err.get('code')} {err.get('message')}"
    return ""


def _snippet(body: bytes, limit: int = 60) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    if not text:
        return "empty body"
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


def _describe(err: Exception) -> str:
    return _one_line(str(err)) or type(err).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())
