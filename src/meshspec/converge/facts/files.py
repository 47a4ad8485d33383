from __future__ import annotations

import shlex

from pyinfra.api import FactBase


class FileDigests(FactBase):
    """{path: sha256} of those of `paths` that exist, in one command."""

    default = dict

    def command(self, paths: list[str]) -> str:
        return f"sha256sum -- {' '.join(shlex.quote(p) for p in paths)} 2>/dev/null; true"

    def process(self, output):
        return {path: digest for digest, path in (line.split(None, 1) for line in output if line.strip())}


class FileOwners(FactBase):
    """{path: owner's name} of those of `paths` that exist, in one command."""

    default = dict

    def command(self, paths: list[str]) -> str:
        return f"stat -c '%U %n' -- {' '.join(shlex.quote(p) for p in paths)} 2>/dev/null; true"

    def process(self, output):
        return {path: owner for owner, path in (line.split(None, 1) for line in output if line.strip())}


class MissingDirectories(FactBase):
    """Those of `paths` that are not directories, in one command."""

    default = list

    def command(self, paths: list[str]) -> str:
        return "".join(f"[ -d {shlex.quote(p)} ] || echo {shlex.quote(p)}; " for p in paths) + "true"

    def process(self, output):
        return [line.strip() for line in output if line.strip()]
