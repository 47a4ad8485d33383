from __future__ import annotations

from pyinfra.api import FactBase


class Stamps(FactBase):
    """{directory name: stamp content} of the directories under `root` holding the stamp file `stamp`."""

    default = dict

    def command(self, root: str, stamp: str) -> str:
        return f'for f in {root}/*/{stamp}; do [ -f "$f" ] && echo "$(basename "$(dirname "$f")") $(cat "$f")"; done; true'

    def process(self, output):
        return dict(line.split(" ", 1) for line in output if " " in line)
