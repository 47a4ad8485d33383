"""A service's mesh identity: the certificate the registry's Connect CA issues it, which it presents
to the proxy's mTLS listener, where the intentions decide on it.

The program asks the registry with its own token (the Connect CA issues a service's certificate
for service:write on it, which a service's token has on its own name) for the roots and its leaf,
and keeps both in one `ssl.SSLContext` that its HTTP clients share. The roots are the only CAs it
trusts for the proxy; the proxy's certificate names a SPIFFE URI and no host, so the chain to the
mesh CA is what is checked, not a host name. The leaf is what it presents. A blocking query on the
leaf returns when the agent issues the next one (at half-life), and `load_cert_chain` on the same
context swaps it in for the next handshakes. The key never touches a disk: it is loaded from an
anonymous memory file (memfd).

Until the first leaf is in (the registry not answering yet, the program's token not made yet on a
first deploy), calls through the proxy fail their handshake; `status` says why, and the program
keeps asking with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Any

import httpx

from meshspec.common.durations import parse_duration

log = logging.getLogger("meshspec.identity")

FIRST_BACKOFF, MAX_BACKOFF = 0.5, 10.0  # seconds between attempts while the registry refuses or is away
WAIT = "5m"  # a blocking query's longest wait


def load_leaf(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """The leaf and its key into `context`, through a memory file: nothing is written to a disk."""
    fd = os.memfd_create("mesh-identity", os.MFD_CLOEXEC)
    try:
        os.write(fd, (cert_pem + key_pem).encode())
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class MeshIdentity:
    def __init__(self, consul_addr: str, token: str | None, service: str) -> None:
        self.base = consul_addr if consul_addr.startswith("http") else f"http://{consul_addr}"
        self.headers = {"X-Consul-Token": token} if token else {}
        self.service = service
        # Trusts nothing until the roots are in: a handshake before then fails, it never trusts the system's CAs.
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.leaf: dict[str, Any] | None = None
        self.error: str | None = "not asked yet"
        self._task: asyncio.Task | None = None

    @property
    def status(self) -> dict[str, Any]:
        leaf = self.leaf or {}
        return {"ok": self.error is None and bool(leaf), "service": self.service, "uri": leaf.get("ServiceURI"),
                "serial": leaf.get("SerialNumber"), "valid_before": leaf.get("ValidBefore"), "error": self.error}

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name=f"mesh identity of {self.service}")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _keep(self) -> None:
        index, backoff, roots_in = 0, FIRST_BACKOFF, False
        async with httpx.AsyncClient(base_url=self.base, headers=self.headers, trust_env=False,
                                     timeout=parse_duration(WAIT) + 10) as registry:
            while True:
                try:
                    if not roots_in:
                        roots = (await registry.get("/v1/agent/connect/ca/roots")).raise_for_status().json()
                        self.context.load_verify_locations(cadata="".join(r["RootCert"] for r in roots["Roots"]))
                        roots_in = True
                    answer = await registry.get(f"/v1/agent/connect/ca/leaf/{self.service}",
                                                params={"index": index, "wait": WAIT})
                    leaf = answer.raise_for_status().json()
                    if leaf["SerialNumber"] != (self.leaf or {}).get("SerialNumber"):
                        load_leaf(self.context, leaf["CertPEM"], leaf["PrivateKeyPEM"])
                        log.info("mesh identity %s: certificate %s until %s", leaf["ServiceURI"],
                                 leaf["SerialNumber"], leaf["ValidBefore"])
                    self.leaf, self.error, backoff = leaf, None, FIRST_BACKOFF
                    index = int(leaf["ModifyIndex"])
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # keep the certificate in hand (if any); ask again
                    self.error = f"{type(err).__name__}: {err}"[:300]
                    log.warning("mesh identity of %s: %s", self.service, self.error)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)


def mesh_identity(consul_addr: str | None, token: str | None, service: str | None,
                  proxy_url: str | None) -> MeshIdentity | None:
    """The identity a program presents to the proxy: where it calls an https (mTLS) proxy; None for
    a plain one. An https proxy without the registry or the service's name is a configuration error."""
    if not (proxy_url or "").startswith("https:"):
        return None
    if not consul_addr or not service:
        raise ValueError(f"an mTLS proxy ({proxy_url}) needs the registry's address and the service's name "
                         "(--consul, --service): the certificate comes from the registry's Connect CA")
    return MeshIdentity(consul_addr, token, service)
