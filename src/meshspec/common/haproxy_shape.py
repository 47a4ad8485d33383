"""The contract between haproxy.cfg's renderer and mesh-controller, which runs beside HAProxy.

The renderer embeds the config's *shape* (backends, policies, paths: what needs a reload to
change) as one JSON comment line; the controller reads it back to know which services to watch,
how to add servers, and whether HAProxy runs an older shape. Server ids are derived from
instance ids here so both sides agree on them.
"""

from __future__ import annotations

import json
import zlib

SHAPE_MARKER = "# meshspec-shape: "
# Beside the server-state file: the hash of the shape HAProxy last loaded, which the controller
# writes after each reload (the deploy makes both files the controller's user's).
LOADED_SHAPE = "loaded-shape"


def shape_line(shape: dict) -> str:
    return SHAPE_MARKER + json.dumps(shape, sort_keys=True, separators=(",", ":"))


def read_shape(config_text: str) -> dict | None:
    """The shape embedded in a rendered haproxy.cfg (None for a file meshspec did not render)."""
    for line in config_text.splitlines():
        if line.startswith(SHAPE_MARKER):
            return json.loads(line[len(SHAPE_MARKER):])
    return None


def server_id(instance_id: str) -> int:
    """A stable HAProxy server id (spares use 1..spare_slots, instances 1000 and up)."""
    return 1000 + zlib.crc32(instance_id.encode()) % 1_000_000
