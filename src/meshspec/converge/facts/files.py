from __future__ import annotations

import shlex

from pyinfra.api import FactBase


class FileDigests(FactBase):
    """{path: sha256} of those of `paths` that exist, in one command."""

    default = dict
    per_path = True  # read for fewer paths, the same answer narrowed (facts.snapshot)

    def command(self, paths: list[str]) -> str:
        return f"sha256sum -- {' '.join(shlex.quote(p) for p in paths)} 2>/dev/null; true"

    def process(self, output):
        return {path: digest for digest, path in (line.split(None, 1) for line in output if line.strip())}


class _Stat(FactBase):
    """{path: `stat`'s `field` of it} of those of `paths` that exist, in one command."""

    default = dict
    per_path = True
    field = ""

    def command(self, paths: list[str]) -> str:
        return f"stat -c '{self.field} %n' -- {' '.join(shlex.quote(p) for p in paths)} 2>/dev/null; true"

    def process(self, output):
        return {path: value for value, path in (line.split(None, 1) for line in output if line.strip())}


class FileOwners(_Stat):
    """{path: owner's name} of those of `paths` that exist."""

    field = "%U"


class FileModes(_Stat):
    """{path: permission bits in octal, as `chmod` takes them} of those of `paths` that exist."""

    field = "%a"


class MissingDirectories(FactBase):
    """Those of `paths` that are not directories, in one command."""

    default = list
    per_path = True

    def command(self, paths: list[str]) -> str:
        return "".join(f"[ -d {shlex.quote(p)} ] || echo {shlex.quote(p)}; " for p in paths) + "true"

    def process(self, output):
        return [line.strip() for line in output if line.strip()]
