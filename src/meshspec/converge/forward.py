"""A TCP service as a host of the mesh reaches it, reached from the deploying machine the way
`ssh -L` reaches it: through the SSH connection pyinfra holds to that host, a `direct-tcpip`
channel per connection. What the deploy says to the service (the management token among it)
crosses the network inside SSH, and an address only the host can reach (a Consul agent on its
own loopback) is reached all the same.

Only inside a pyinfra run: the ends are gevent servers of the deploy's process and live as long
as it does.
"""

from __future__ import annotations

import logging
from functools import partial

import gevent
import paramiko
from gevent.server import StreamServer

_ends: dict[tuple[str, str, int], StreamServer] = {}  # (host name, address, port) -> its local end


def _not_refused_channel(record: logging.LogRecord) -> bool:
    """paramiko logs each channel the host could not connect as an error; here that is the answer
    of a port that does not listen yet (the deploy waits for its agent, and says so): the client
    sees its connection closed."""
    return not (record.getMessage().startswith("Secsh channel") and "open FAILED" in record.getMessage())


logging.getLogger("paramiko.transport").addFilter(_not_refused_channel)


def local_end(host_name: str, address: str, port: int) -> tuple[str, int]:
    """Where on this machine a connection goes to `address:port` as the host `host_name` reaches it."""
    key = (host_name, address, port)
    if key not in _ends:
        from pyinfra.context import inventory  # the running deploy's hosts, connected

        transport = inventory.get_host(host_name).connector.client.get_transport()
        _ends[key] = StreamServer(("127.0.0.1", 0), partial(_carry, transport, (address, port)))
        _ends[key].start()
    return "127.0.0.1", _ends[key].server_port


def _carry(transport: paramiko.Transport, target: tuple[str, int], sock, peer) -> None:
    """One connection: both ways until either side ends it."""
    try:
        channel = transport.open_channel("direct-tcpip", target, peer)
    except (paramiko.SSHException, OSError):  # the host could not connect: so the client is told, by a close
        sock.close()
        return

    def pump(read, write) -> None:
        try:
            while data := read(65536):
                write(data)
        except OSError:
            pass
        finally:  # one side has ended: so does the other
            channel.close()
            sock.close()

    gevent.joinall([gevent.spawn(pump, sock.recv, channel.sendall), gevent.spawn(pump, channel.recv, sock.sendall)])
