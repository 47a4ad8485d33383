"""/v1/snapshot: all of the agent's state as one archive (GET), and that state restored (PUT).

The archive is laid out as Consul's is: a gzipped tar of `meta.json` (the snapshot's ID, index and
version), the state (`state.json` here: services, checks, KV with tombstones, sessions; Consul's
`state.bin` is its Raft FSM, which no single-node agent has) and `SHA256SUMS` over both, checked
before anything is restored. A restore replaces every table in one SQLite transaction: SIGKILL
during it leaves the old state or the new one, never a mix. It is Consul's archive layout, not its
bytes: a snapshot of a real Consul does not restore here, nor this one there (README).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
import uuid
from typing import Any

from aiohttp import web

from meshspec.runtime.agent import VERSION
from meshspec.runtime.agent.errors import ConsulError
from meshspec.runtime.agent.http import agent_of

routes = web.RouteTableDef()
META, STATE, SUMS = "meta.json", "state.json", "SHA256SUMS"
MAX_ARCHIVE = 256 * 1024 * 1024  # a restore body larger than this is refused before it is read whole


def archive(state: dict[str, Any]) -> bytes:
    """The snapshot archive of `state` (a `Store.snapshot()`)."""
    files = {
        META: json.dumps({"ID": f"{state['Index']}-{int(time.time())}-{uuid.uuid4().hex[:8]}",
                          "Index": state["Index"], "Term": 1, "Version": 1, "MeshspecVersion": VERSION}).encode(),
        STATE: json.dumps(state).encode(),
    }
    files[SUMS] = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items()).encode()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as zipped, tarfile.open(fileobj=zipped, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def unarchive(data: bytes) -> dict[str, Any]:
    """The state in a snapshot archive, after its checksums; ValueError says what is wrong."""
    try:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r") as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    except (OSError, EOFError, tarfile.TarError) as err:
        raise ValueError(f"not a snapshot archive: {err}") from None
    missing = [name for name in (META, STATE, SUMS) if name not in files]
    if missing:
        raise ValueError(f"archive lacks {', '.join(missing)}")
    sums = dict(reversed(line.split("  ", 1)) for line in files[SUMS].decode().splitlines() if "  " in line)
    for name in (META, STATE):
        if sums.get(name) != hashlib.sha256(files[name]).hexdigest():
            raise ValueError(f"{name} does not match its SHA-256 in {SUMS}")
    state = json.loads(files[STATE])
    for table in ("Index", "Services", "Checks", "KV", "Tombstones", "Sessions"):
        if table not in state:
            raise ValueError(f"{STATE} lacks {table}")
    return state


@routes.get("/v1/snapshot")
async def save(request: web.Request) -> web.Response:
    agent = agent_of(request)
    request["identity"].require("acl", "write")  # Consul: a management token
    state = agent.store.snapshot()
    response = web.Response(body=archive(state), content_type="application/x-gzip")
    response.headers["X-Consul-Index"] = str(state["Index"])
    return response


@routes.put("/v1/snapshot")
async def restore(request: web.Request) -> web.Response:
    agent = agent_of(request)
    request["identity"].require("acl", "write")
    # Read past the app's 4 MiB request limit (a KV store can be larger), up to the archive's own.
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(1 << 20):
        size += len(chunk)
        if size > MAX_ARCHIVE:
            raise ConsulError(413, f"Request body too large, max size: {MAX_ARCHIVE} bytes")
        chunks.append(chunk)
    try:
        state = unarchive(b"".join(chunks))
    except ValueError as err:
        raise ConsulError(500, f"failed to read snapshot: {err}") from None
    agent.restore(state)
    return web.Response(status=200, text="", content_type="text/plain")
