"""Locust through the proxy's mTLS listener, as one service of the mesh.

Each user presents the certificate in MESH_CLIENT_CERT / MESH_CLIENT_KEY and trusts only the mesh
CA in MESH_CA (for a service of a running mesh: the registry's leaf, GET
/v1/agent/connect/ca/leaf/<service>, and its roots). It requests MESH_PATH, half of the time on a
kept-alive connection and half on a new one (a TLS handshake each, which is what a rotation of the
proxy's certificate could break); an answer counts only with status 200 and MESH_EXPECT in its body
(the service's own words, not the proxy's).

    MESH_CA=ca.pem MESH_CLIENT_CERT=leaf.pem MESH_CLIENT_KEY=key.pem MESH_PATH=/svc/backend-api/health \\
    MESH_EXPECT=backend-api locust -f loadtests/mtls.py --headless -u 6 -t 30s --host https://127.0.0.1:<mtls port>
"""

from __future__ import annotations

import os

from gevent import ssl
from locust import FastHttpUser, constant, task


def mesh_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=os.environ["MESH_CA"])
    context.check_hostname = False  # the proxy is known by its certificate's URI (spiffe://), not a host name
    context.load_cert_chain(os.environ["MESH_CLIENT_CERT"], os.environ["MESH_CLIENT_KEY"])
    return context


class MeshCaller(FastHttpUser):
    ssl_context_factory = staticmethod(mesh_context)
    wait_time = constant(0)
    path = os.environ.get("MESH_PATH", "/healthz")
    expect = os.environ.get("MESH_EXPECT", "")

    def call(self, headers: dict[str, str], name: str) -> None:
        with self.client.get(self.path, headers=headers, name=name, catch_response=True) as response:
            if response.status_code != 200 or self.expect not in (response.text or ""):
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:120]!r}")

    @task
    def kept_alive(self) -> None:
        self.call({}, "kept-alive")

    @task
    def new_connection(self) -> None:
        self.call({"Connection": "close"}, "new connection")
