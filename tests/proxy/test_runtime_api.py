"""The runtime API client against a real HAProxy: `del server` of a server that still carries a
connection is ServerBusy (not yet, which the controller retries without counting an error), and
goes through once the connection has ended."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading

import pytest

from meshspec.runtime.proxy.apply import apply_changes
from meshspec.runtime.proxy.reconcile import Change
from meshspec.runtime.proxy.runtime_api import RuntimeApi, ServerBusy
from tests.support import free_port, wait_until

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@pytest.fixture
def tunnel(tmp_path):
    """HAProxy with a TCP listener whose backend has one server added at run time, in front of a
    server that holds each connection open until the client closes it."""
    upstream = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(upstream.accept()[0]) for _ in range(8)], daemon=True).start()
    listen, sock = free_port(), tmp_path / "runtime.sock"
    (tmp_path / "haproxy.cfg").write_text(f"""global
    stats socket {sock} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend in
    bind 127.0.0.1:{listen}
    default_backend tunnel_db
backend tunnel_db
""")
    proc = subprocess.Popen([HAPROXY, "-f", str(tmp_path / "haproxy.cfg")], stderr=subprocess.PIPE)
    try:
        api = RuntimeApi(str(sock))
        wait_until(lambda: sock.exists() and api.backends(), 10, what="HAProxy's runtime API")
        api.command(f"add server tunnel_db/db-by-hand 127.0.0.1:{upstream.getsockname()[1]}")
        api.command("set server tunnel_db/db-by-hand state ready")
        yield api, listen, held
    finally:
        proc.terminate()
        proc.wait(10)
        upstream.close()


def test_a_server_with_a_live_connection_is_deleted_once_it_ends(tunnel):
    api, listen, held = tunnel
    client = socket.create_connection(("127.0.0.1", listen))
    wait_until(lambda: held, 5, what="the connection through the tunnel")
    api.command("set server tunnel_db/db-by-hand state maint")
    delete = Change("delete", "tunnel_db", "db-by-hand", ("del server tunnel_db/db-by-hand",))
    applied, failed = apply_changes(api, [delete])
    assert applied == [] and len(failed) == 1 and isinstance(failed[0][1], ServerBusy), failed
    client.close()  # the session ends: both its sides
    held[0].close()
    wait_until(lambda: apply_changes(api, [delete])[0] == [delete], 10, what="the delete once the connection ended")
    assert [s.name for s in api.servers_state("tunnel_db")] == []
