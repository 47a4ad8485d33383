from __future__ import annotations

from pyinfra.api import FactBase


class Stamps(FactBase):
    """{directory name: stamp content} of the directories under `root` holding the stamp file `stamp`
    (a stamp is one line)."""

    default = dict

    def command(self, root: str, stamp: str) -> str:
        # One grep for every stamp: a loop of basename/dirname/cat forks three processes a stamp
        # (about 140 ms for a host's 41 instances, measured on the test cluster's h1).
        return f"cd {root} 2>/dev/null && grep -H -- '' */{stamp} 2>/dev/null; true"

    def process(self, output):
        # "<name>/<stamp>:<content>": names hold no "/", stamp file names no ":"
        pairs = (line.split("/", 1) for line in output if "/" in line)
        return {name: rest.split(":", 1)[1] for name, rest in pairs if ":" in rest}
