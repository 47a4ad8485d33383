"""The controller's rotation of the proxy's certificate (its mTLS listener's `crt`).

A blocking query on the registry's `/v1/agent/connect/ca/leaf/<proxy service>` returns when the
Connect CA issues the next certificate (Consul's agent renews before expiry); each one goes into
HAProxy without a reload, `set ssl cert` then `commit ssl cert` on the runtime API (the listener
keeps its connections, new handshakes get the new certificate), and into the file first, so that a
reload or a restart of HAProxy, which read the file, keep it. A failure keeps the running
certificate and retries with backoff, the same leaf until HAProxy has taken it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import aiohttp

from meshspec.runtime.proxy.runtime_api import RuntimeApi
from meshspec.runtime.proxy.watch import FIRST_BACKOFF, MAX_BACKOFF, blocking_get

log = logging.getLogger("meshspec.controller")


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically by a 0600 file holding `text` (a reader sees the old or the new)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install_certificate(api: RuntimeApi, path: Path, pem: str) -> None:
    """The file, then HAProxy's copy in memory: `set ssl cert` opens a transaction with the new PEM
    (the CLI's `<<` payload, ended by an empty line), `commit ssl cert` swaps it in."""
    write_private(path, pem)
    api.command(f"set ssl cert {path} <<\n{pem.rstrip()}\n")
    api.command(f"commit ssl cert {path}")


async def keep_certificate(session: aiohttp.ClientSession, consul: str, service: str, path: Path, api: RuntimeApi,
                           wait: str, on_installed: Callable[[dict], None], on_error: Callable[[Exception], None]) -> None:
    """Rotate until cancelled: each leaf the registry issues for `service` into `path` and HAProxy."""
    index, backoff, installed = 0, FIRST_BACKOFF, None
    url = f"{consul}/v1/agent/connect/ca/leaf/{service}"
    while True:
        try:
            _, leaf = await blocking_get(session, url, index, wait)
            if leaf["SerialNumber"] != installed:
                await asyncio.to_thread(install_certificate, api, path, leaf["CertPEM"] + leaf["PrivateKeyPEM"])
                installed = leaf["SerialNumber"]
                log.info("proxy certificate %s installed, valid until %s", installed, leaf["ValidBefore"])
                on_installed(leaf)
            index, backoff = int(leaf["ModifyIndex"]), FIRST_BACKOFF
        except asyncio.CancelledError:
            raise
        except Exception as err:  # keep the running certificate; retry the same leaf
            on_error(err)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
