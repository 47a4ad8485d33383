"""A service's isolated install (its venv and npm prefix) as a recipe: pure.

The recipe's hash is written as a stamp once the install finished; a deploy reinstalls a
service only when its recipe changed, and reads all stamps with one command.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from meshspec.common.digest import digest
from meshspec.spec.models import Install
from meshspec.spec.placeholders import render

STAMP = ".meshspec-install"
SECONDS_FILE = ".meshspec-install-seconds"  # how long the install took (for bench/workloads.py)


@dataclass(frozen=True)
class Recipe:
    service: str
    install_dir: str
    pip: tuple[str, ...]
    npm: tuple[str, ...]
    after: tuple[tuple[str, ...], ...] = ()  # rendered: {install_dir} substituted

    @property
    def hash(self) -> str:
        return digest([self.pip, self.npm, *([self.after] if self.after else [])])

    def script(self) -> str:
        """Install from scratch, stamp last: an interrupted install leaves no stamp and is redone."""
        d = shlex.quote(self.install_dir)
        steps = ["set -e", "started=$(date +%s)", f"rm -rf {d}", f"mkdir -p {d}"]
        if self.pip:
            steps += [f"python3 -m venv {d}/venv",
                      f"{d}/venv/bin/pip install --quiet --disable-pip-version-check {shlex.join(self.pip)}"]
        if self.npm:
            steps += [f"npm install --prefix {d} --no-audit --no-fund --loglevel=error {shlex.join(self.npm)}"]
        steps += [f"(cd {d} && {shlex.join(argv)})" for argv in self.after]
        steps += [f"echo $(( $(date +%s) - started )) > {d}/{SECONDS_FILE}", f"echo {self.hash} > {d}/{STAMP}"]
        return "\n".join(steps)


def recipe(service: str, install_dir: str, install: Install) -> Recipe | None:
    if not (install.pip or install.npm or install.after):
        return None
    after = tuple(tuple(render(a, {"install_dir": install_dir}) for a in argv) for argv in install.after)
    return Recipe(service, install_dir, tuple(install.pip), tuple(install.npm), after)


def parallel_script(recipes: list[Recipe], jobs: int) -> str:
    """Run the recipes' scripts `jobs` at a time (installs wait on downloads as much as on the CPU),
    in the order given; a failed one stops the rest and shows the end of its log."""
    steps = ["set -e", "work=$(mktemp -d)", "trap 'rm -rf \"$work\"' EXIT"]
    for r in recipes:
        steps += [f"cat > \"$work/{r.service}.sh\" <<'MESHSPEC_RECIPE'", r.script(), "MESHSPEC_RECIPE"]
    run_one = ('sh "$1" > "$1.log" 2>&1 || { echo "install of $(basename "$1" .sh) failed:"; tail -40 "$1.log"; exit 255; }')
    names = " ".join(shlex.quote(f"{r.service}.sh") for r in recipes)
    steps += [f"cd \"$work\" && printf '%s\\n' {names} | xargs -P {jobs} -I{{}} sh -c {shlex.quote(run_one)} _ \"$work/{{}}\""]
    return "\n".join(steps)

