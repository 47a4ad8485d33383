"""What runs a mesh's instances on a host: the one place the two runtimes are named."""

from __future__ import annotations

from enum import StrEnum


class Runtime(StrEnum):
    """MESH_RUNTIME. A StrEnum: it is written as its value in registrations and pyinfra data."""

    PROCESS = "process"  # one supervisord program per instance
    DOCKER = "docker"  # one container per instance

    @property
    def in_containers(self) -> bool:
        return self is Runtime.DOCKER
