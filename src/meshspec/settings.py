"""Settings from the environment, shared by the CLI, the inventory and the deploy.

The one place meshspec reads its own environment variables (MESH_*, CONSUL_HTTP_ADDR).
"""

from __future__ import annotations

import os
from pathlib import Path

from meshspec.plan.hosts import LOCAL, Host, HostsError, parse_hosts
from meshspec.plan.runtime import Runtime

DEFAULT_SPEC = "mesh_spec.yaml"
# Not under /var/: extended-memory-mcp refuses any database path under /var/ or /etc/ (README).
DEFAULT_STATE_DIR = "/srv/meshspec"


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


# The process runtime's installs, one directory per recipe, shared by every mesh of the host.
# FHS: regenerable data. `make down` keeps it; `make purge` empties it.
DEFAULT_CACHE_DIR = "/var/cache/meshspec"


def cache_dir(environ=os.environ) -> str:
    return environ.get("MESH_CACHE_DIR") or DEFAULT_CACHE_DIR


def runtime(environ=os.environ) -> Runtime:
    value = environ.get("MESH_RUNTIME", Runtime.PROCESS.value)
    try:
        return Runtime(value)
    except ValueError:
        raise SettingsError(f"MESH_RUNTIME must be one of {', '.join(Runtime)}, got {value!r}") from None


def spec_path(environ=os.environ) -> str:
    return environ.get("MESH_SPEC", DEFAULT_SPEC)


def consul_http_addr(environ=os.environ) -> str | None:
    """A real Consul to use instead of deploying the embedded agent."""
    return environ.get("CONSUL_HTTP_ADDR") or None


def configured_hosts(environ: dict[str, str] | None = None) -> list[Host]:
    """The hosts a mesh is deployed to: `@local` unless the user lists SSH hosts, in
    `MESH_HOSTS="web1,deploy@web2"` or in a file named by `MESH_HOSTS_FILE` with one host a line
    (`name [address]`, `#` comments). The `inventory` file and `meshspec validate` both read this."""
    env = os.environ if environ is None else environ
    if path := env.get("MESH_HOSTS_FILE"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as err:
            raise HostsError(f"MESH_HOSTS_FILE: {err}") from None
        entries = [(line, f"{path}:{n}") for n, line in enumerate(lines, 1)]
    elif listed := env.get("MESH_HOSTS"):
        entries = [(item, "MESH_HOSTS") for item in listed.split(",")]
    else:
        entries = [(LOCAL, "default")]
    return parse_hosts(entries)
