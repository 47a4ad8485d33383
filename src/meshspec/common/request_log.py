"""The proxy's request log: the line HAProxy writes for every request through the mesh's frontend,
and how the controller reads one back.

haproxy.cfg's renderer sets it as the frontend's `log-format`; HAProxy sends it to its log target
(stdout, for people) and to a ring buffer `RING` (render/haproxy.py), which mesh-controller follows
on the runtime API (`show events RING -w -n`) to count each answer's duration per service
(runtime/proxy/request_log.py): HAProxy 2.6's exporter has only a mean of the last 1,024 answers,
and the latency percentiles and SLO alerts need a histogram.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

#: the ring buffer HAProxy keeps the request log in, for the controller
RING = "meshspec-requests"

FORMAT = (
    '{"ts":"%tr","request_id":"%ID","traceparent":"%[capture.req.hdr(0)]","client":"%ci:%cp",'
    '"method":"%HM","uri":"%[capture.req.uri,json(utf8s)]","service":"%[var(txn.svc)]",'
    '"caller":"%[var(txn.who),json(utf8s)]",'
    '"backend":"%b","server":"%s","status":%ST,"bytes":%B,"retries":"%rc","termination":"%ts",'
    '"t_connect_ms":%Tc,"t_response_ms":%Tr,"t_total_ms":%Ta,"t_data_ms":%Td}'
)


@dataclass(frozen=True)
class Answer:
    """One request the proxy answered: its backend (HAProxy's name for the service's pool), who
    called (render/haproxy.who_lines: the service its certificate names, the consumer its key
    names, else its address), its status (HAProxy's own answers too: a 503 with no server, a 504), and the time from the request
    received to the answer's headers sent (`%Ta` - `%Td`: the body's transfer left out, so a stream
    such as an MCP session's server-sent events counts as long as it took to start), in seconds."""

    backend: str
    caller: str
    status: int
    seconds: float


def parse(line: str) -> Answer | None:
    """The answer a request-log line records; None for a line that is not one (another format, or a
    request that got no answer: a status of -1, the client gone first)."""
    try:
        entry = json.loads(line)
        total, data = int(entry["t_total_ms"]), int(entry["t_data_ms"])
        answer = Answer(str(entry["backend"]), str(entry["caller"]), int(entry["status"]),
                        (total - max(data, 0)) / 1000)
    except (ValueError, TypeError, KeyError):
        return None
    return answer if answer.status >= 0 and answer.seconds >= 0 else None
