"""supervisord's XML-RPC interface on its unix socket, through supervisor's own transport: the one
way meshspec's code speaks to a host's supervisord (verify, the probes' owner check, chaos, and
`meshspec probe supervisor`, which verify runs on another host)."""

from __future__ import annotations

import xmlrpc.client


def supervisor_rpc(socket_path: str, timeout: float | None = None):
    """The `supervisor` namespace of supervisord's API (getAllProcessInfo, stopProcess, ...)."""
    from supervisor.xmlrpc import SupervisorTransport  # imported here: a container's program needs none

    transport = SupervisorTransport(None, None, serverurl=f"unix://{socket_path}")
    if timeout is not None:
        transport.timeout = timeout
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor
