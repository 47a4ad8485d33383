"""The seed's liar, for every probe test: a listener that answers anything with
`{"status":"healthy"}` (the netcat loop the old status report called an MCP server)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

LIE = b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"status":"healthy"}\n'


def read_request(conn: socket.socket, wait: float = 0.5) -> None:
    """Read what a client sends within `wait`: an HTTP request whole (its body by Content-Length),
    or whatever another protocol's client says first."""
    conn.settimeout(wait)
    data = b""
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                if len(body) >= length:
                    return
            elif not data[:8].isascii() or b" " not in data[:8]:
                return  # not HTTP: a binary protocol's greeting, read whole
    except TimeoutError:
        return


@pytest.fixture
def liar() -> Iterator[int]:
    """A listener that says it is healthy to whoever connects, then hangs up."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                # Read what the client says first (as netcat does), if it speaks first within 0.5 s:
                # closing on an unread request makes the kernel answer RST, and the client would see a
                # reset, not the lie.
                read_request(conn)
                conn.sendall(LIE)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()
