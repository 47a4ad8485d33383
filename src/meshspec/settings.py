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


RUNTIMES = ("process", "docker")


def runtime(environ=os.environ) -> str:
    value = environ.get("MESH_RUNTIME", "process")
    if value not in RUNTIMES:
        raise SettingsError(f"MESH_RUNTIME must be one of {', '.join(RUNTIMES)}, got {value!r}")
    return value


def spec_path(environ=os.environ) -> str:
    return environ.get("MESH_SPEC", DEFAULT_SPEC)


def consul_http_addr(environ=os.environ) -> str | None:
    """A real Consul to use instead of deploying the embedded agent."""
    return environ.get("CONSUL_HTTP_ADDR") or None
