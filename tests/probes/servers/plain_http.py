"""Servers that are not MCP, for the probe's failure tests (stdlib only).

  plain_http.py --port P           HTTP: /health answers 200 "ok" (GET and POST), anything else 404
  plain_http.py --port P --silent  accepts TCP connections and never answers a byte
"""

from __future__ import annotations

import argparse
import http.server
import socket
import time


class Handler(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path == "/health":
            body, status = b"ok\n", 200
        else:
            body, status = b"not found\n", 404
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def silent(port: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    held = []
    while True:
        conn, _ = listener.accept()
        held.append(conn)  # keep it open, read nothing, answer nothing
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--silent", action="store_true")
    args = parser.parse_args()
    if args.silent:
        silent(args.port)
    else:
        http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
