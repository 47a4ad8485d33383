"""Each answer's duration through the proxy, per service, from HAProxy's request log.

HAProxy 2.6's exporter gives a backend's mean response time only; the dashboard's p50/p99 and the
SLO alerts need a histogram. HAProxy keeps each request's log line (common/request_log.py) in a
ring buffer; the controller follows it on the runtime API it already holds (`show events <ring> -w
-n`: new lines only, waiting for more) and counts every answer in
`meshspec_proxy_request_duration_seconds{proxy="<backend>"}`, and the answers slower than the
service's `routing.slo.latency` (read from haproxy.cfg's shape) in
`meshspec_proxy_responses_over_slo_total`: more than 1% of them is a p99 over the SLO, exactly,
whatever the buckets.

A ring never blocks HAProxy: should the controller fall behind, HAProxy drops new lines for it
and says how many (counted in `meshspec_proxy_request_log_dropped_lines_total`; the histogram then
counts fewer answers than HAProxy's own `haproxy_backend_http_responses_total`).
bench/request_log.py measures what following costs.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from meshspec.common import request_log
from meshspec.runtime.proxy.watch import FIRST_BACKOFF, MAX_BACKOFF

#: seconds; the dashboard's p50/p99 interpolate between these (the SLO alert needs none of them)
#: what HAProxy writes in the ring in place of the lines it dropped for a reader that fell behind
DROPPED = re.compile(r"(\d+) events? dropped")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0)


def slos_of(shape: dict) -> dict[str, float]:
    """backend -> the seconds its service's answers should take at most (99% of them), from the
    spec's `routing.slo.latency` (ms) as haproxy.cfg's shape carries each backend's routing."""
    return {backend: spec["routing"]["slo"]["latency"] / 1000
            for backend, spec in shape.get("backends", {}).items() if "slo" in spec.get("routing", {})}


class Durations:
    """The metrics one request-log line updates."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram("meshspec_proxy_request_duration_seconds",
                                 "From a request received by the proxy to its answer's headers sent (HAProxy's "
                                 "%Ta - %Td), by backend (the service)", ["proxy"], buckets=BUCKETS, registry=registry)
        self.over_slo = Counter("meshspec_proxy_responses_over_slo_total",
                                "Answers through the proxy slower than the service's routing.slo.latency",
                                ["proxy"], registry=registry)
        self.callers = Counter("meshspec_proxy_caller_requests_total",
                               "Requests answered through the proxy, by service (backend) and caller: the "
                               "service its certificate names, the consumer its key names, else its address",
                               ["proxy", "caller"], registry=registry)
        self.dropped = Counter("meshspec_proxy_request_log_dropped_lines_total",
                               "Lines HAProxy dropped for the controller, which fell behind (its ring's own notices)",
                               registry=registry)
        self.unread = Counter("meshspec_proxy_request_log_unread_lines_total",
                              "Lines of the proxy's request log that record no answer (or are not its format)",
                              registry=registry)

    def expect(self, backends: Iterable[str]) -> None:
        """Series of 0 for each backend before its first answer: a rate needs two scrapes of a series,
        so answers that came before its first scrape would otherwise never show in one."""
        for backend in backends:
            self.seconds.labels(backend)
            self.over_slo.labels(backend)

    def record(self, line: str, slos: dict[str, float]) -> None:
        if dropped := DROPPED.match(line):
            self.dropped.inc(int(dropped[1]))
            return
        answer = request_log.parse(line)
        if answer is None:
            self.unread.inc()
            return
        self.seconds.labels(answer.backend).observe(answer.seconds)
        if answer.seconds > slos.get(answer.backend, math.inf):
            self.over_slo.labels(answer.backend).inc()
        if answer.backend in slos:  # a service's: the edge's own answers (401, 429) have no callee
            self.callers.labels(answer.backend, answer.caller).inc()


async def _open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the runtime API: a unix socket's path, or host:port."""
    if address.startswith("/"):
        return await asyncio.open_unix_connection(address)
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host or "127.0.0.1", int(port))


async def follow(address: str, on_line: Callable[[str], None], on_error: Callable[[Exception], None],
                 ring: str = request_log.RING) -> None:
    """Every new line of HAProxy's `ring`, as it comes, until cancelled. The connection ends when the
    HAProxy process that served it goes (a reload's old worker): then it reconnects, to the new one.
    One that ends at once is an error (an HAProxy without the ring answers "No such event sink"),
    retried less and less often."""
    backoff = FIRST_BACKOFF
    while True:
        writer, opened, last = None, asyncio.get_running_loop().time(), ""
        try:
            reader, writer = await _open(address)
            writer.write(f"show events {ring} -w -n\n".encode())
            await writer.drain()
            while line := await reader.readline():
                if last := line.decode(errors="replace").strip():
                    on_line(last)
            if asyncio.get_running_loop().time() - opened < MAX_BACKOFF:
                raise RuntimeError(f"the runtime API ended `show events {ring}` at once: {last or 'no answer'}")
            backoff = FIRST_BACKOFF
        except (OSError, ValueError, RuntimeError) as err:  # ValueError: a line over the reader's limit
            on_error(err)
            backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            if writer is not None:
                writer.close()
        await asyncio.sleep(backoff)
