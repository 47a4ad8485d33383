"""Where a mesh keeps its state on a host: everything under one MESH_STATE_DIR.

Two meshes with different state dirs (and port offsets) share nothing: each has its own
supervisord, agent data, installs and logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Layout:
    root: PurePosixPath

    def instance_dir(self, instance_id: str) -> PurePosixPath:
        return self.root / "instances" / instance_id

    def install_dir(self, service: str) -> PurePosixPath:
        return self.root / "install" / service

    @property
    def supervisor_dir(self) -> PurePosixPath:
        return self.root / "supervisor"

    @property
    def supervisor_conf(self) -> PurePosixPath:
        return self.supervisor_dir / "supervisord.conf"

    @property
    def supervisor_socket(self) -> PurePosixPath:
        return self.supervisor_dir / "supervisor.sock"

    @property
    def programs_dir(self) -> PurePosixPath:
        return self.supervisor_dir / "programs"

    def program_file(self, instance_id: str) -> PurePosixPath:
        return self.programs_dir / f"{instance_id}.conf"

    @property
    def logs_dir(self) -> PurePosixPath:
        return self.root / "logs"

    @property
    def consul_token_file(self) -> PurePosixPath:
        return self.root / "consul" / "management-token"


# What a deploy creates under the state dir; teardown removes these and nothing else.
OWNED = ("install", "instances", "supervisor", "logs", "consul")
