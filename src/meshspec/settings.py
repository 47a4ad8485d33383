"""Settings from the environment, shared by the CLI, the inventory and the deploy."""

from __future__ import annotations

import os

DEFAULT_SPEC = "mesh_spec.yaml"
DEFAULT_STATE_DIR = "/var/lib/meshspec"


class SettingsError(ValueError):
    pass


def port_offset(environ=os.environ) -> int:
    raw = environ.get("MESH_PORT_OFFSET", "0")
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"MESH_PORT_OFFSET must be a whole number, got {raw!r}") from None
    if not 0 <= value < 65535:
        raise SettingsError(f"MESH_PORT_OFFSET must be between 0 and 65534, got {value}")
    return value


def state_dir(environ=os.environ) -> str:
    return environ.get("MESH_STATE_DIR", DEFAULT_STATE_DIR)
