"""A service's isolated install (its venv and npm prefix) as a recipe, and the lines that report
installs in progress: pure.

The recipe's hash is written as a stamp once the install finished; a deploy installs only what
has no stamp, and reads all stamps with one command. On a host, installs live in the install
cache shared by the host's meshes (plan.layout.InstallCache), each under a lock (`host_script`);
in the docker runtime's images, `script` runs as an image layer.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

from meshspec.common.digest import digest
from meshspec.plan.layout import VENV_PYTHON
from meshspec.spec.models import Install
from meshspec.spec.placeholders import render

STAMP = ".meshspec-install"
SECONDS_FILE = ".meshspec-install-seconds"  # how long the install took (for bench/workloads.py)
LOG_TAIL = 40  # lines of a failed install's log shown
# What host_script prints on stdout, besides a failed install's log tail.
_BUILT_MEANWHILE = "meshspec-install: built meanwhile"
_SIZE = "meshspec-install-kb:"


@dataclass(frozen=True)
class Recipe:
    service: str
    install_dir: str
    pip: tuple[str, ...]
    npm: tuple[str, ...]
    after: tuple[tuple[str, ...], ...] = ()  # rendered: {install_dir} substituted
    # The digest of a source tree the deploy uploads as an archive (converge.source.source_archive),
    # unpacked into the install and installed from there; "" when the recipe has none.
    source_digest: str = ""

    @property
    def hash(self) -> str:
        return digest([VENV_PYTHON, self.pip, self.npm, *([self.after] if self.after else []),
                       *([self.source_digest] if self.source_digest else [])])

    def script(self, archive: str = "") -> str:
        """Install from scratch, stamp last: an interrupted install leaves no stamp and is redone.
        `archive`: where the source archive was uploaded, for a recipe with a source."""
        d = shlex.quote(self.install_dir)
        steps = ["set -e", "started=$(date +%s)", f"rm -rf {d}", f"mkdir -p {d}"]
        if self.source_digest:
            steps += [f"mkdir -p {d}/source", f"tar -xzf {shlex.quote(archive)} -C {d}/source"]
        if self.pip:
            steps += [f"{VENV_PYTHON} -m venv {d}/venv",
                      f"{d}/venv/bin/pip install --quiet --disable-pip-version-check {shlex.join(self.pip)}"]
        if self.source_digest:
            steps += [f"rm -rf {d}/source"]
        if self.npm:
            steps += [f"npm install --prefix {d} --no-audit --no-fund --loglevel=error {shlex.join(self.npm)}"]
        steps += [f"(cd {d} && {shlex.join(argv)})" for argv in self.after]
        steps += [f"echo $(( $(date +%s) - started )) > {d}/{SECONDS_FILE}", f"echo {self.hash} > {d}/{STAMP}"]
        return "\n".join(steps)

    @property
    def name(self) -> str:
        """The install directory's name: the key of the Stamps fact."""
        return posixpath.basename(self.install_dir.rstrip("/"))

    @property
    def log(self) -> str:
        return f"{self.install_dir}.log"

    def source_upload(self, nonce: str) -> str:
        """Where an upload of the source archive goes: beside the install, its own name for each
        upload (deploys of several hosts sharing the cache, as the test cluster's do, upload at once)."""
        return f"{self.install_dir}.source-{nonce}.tar.gz"

    def host_script(self, archive: str = "") -> str:
        """`script` in the host's shared install cache: under a lock beside the directory, so two
        deploys never build it at once and the second finds it built; the install's output goes to
        `log`, the end of which is printed when it fails; the last line says the install's size.
        The uploaded source `archive` is removed in any case."""
        d, log = shlex.quote(self.install_dir), shlex.quote(self.log)
        return "\n".join([
            "set -e",
            *([f"trap 'rm -f {shlex.quote(archive)}' EXIT"] if archive else []),
            f"mkdir -p {shlex.quote(posixpath.dirname(self.install_dir.rstrip('/')))}",
            f"exec 9> {shlex.quote(self.install_dir + '.lock')}",
            "flock 9",
            f'if [ "$(cat {d}/{STAMP} 2>/dev/null)" = {self.hash} ]; then echo {shlex.quote(_BUILT_MEANWHILE)}',
            f"elif ! sh -c {shlex.quote(self.script(archive))} > {log} 2>&1; then tail -n {LOG_TAIL} {log}; exit 1",
            "fi",
            f'echo "{_SIZE} $(du -sk {d} | cut -f1)"',
        ])


def recipe(service: str, install_dir: str, install: Install) -> Recipe | None:
    if not (install.pip or install.npm or install.after):
        return None
    after = tuple(tuple(render(a, {"install_dir": install_dir}) for a in argv) for argv in install.after)
    return Recipe(service, install_dir, tuple(install.pip), tuple(install.npm), after)


def meshspec_recipe(install_dir: str, source_digest: str) -> Recipe:
    """meshspec itself, as the process runtime's programs, checker and supervisord run it: in a venv
    of Debian's Python, which every user may run (the deploy's own venv may use an interpreter only
    root can reach), installed from the source archive the deploy uploads, whose digest names it."""
    return Recipe("meshspec", install_dir, (f"{install_dir}/source",), (), source_digest=source_digest)


def installed(output: list[str]) -> tuple[bool, int | None]:
    """From host_script's output: (whether another deploy built it meanwhile, its size in KiB)."""
    size = next((int(line.split()[-1]) for line in output if line.startswith(_SIZE) and line.split()[-1].isdigit()), None)
    return _BUILT_MEANWHILE in output, size


# --- progress lines: what a deploy prints while installs run ------------------------------------

def clock(seconds: float) -> str:
    """2m10s, 0m48s: the running time of an install still running."""
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s"


def took(seconds: float) -> str:
    """48 s, 3m40s: how long a finished install took."""
    return f"{int(seconds)} s" if seconds < 60 else clock(seconds)


def megabytes(kib: int | None) -> str:
    return "size unknown" if kib is None else f"{round(kib / 1024)} MB"


def started_line(service: str) -> str:
    return f"install {service}: started"


def done_line(service: str, seconds: float, kib: int | None, built_meanwhile: bool = False) -> str:
    how = "built meanwhile by another deploy" if built_meanwhile else f"done in {took(seconds)}"
    return f"install {service}: {how}, {megabytes(kib)}"


def failed_line(service: str, seconds: float, log: str) -> str:
    return f"install {service}: FAILED after {took(seconds)}; the end of {log}:"


def progress_line(done: int, total: int, running: dict[str, float], failed: int = 0) -> str:
    """`installs: 5/19 done; running chromadb (2m10s), embeddings (1m40s)`, longest running first.
    `running`: {service: seconds it has run}."""
    head = f"installs: {done}/{total} done" + (f", {failed} failed" if failed else "")
    by_age = sorted(running.items(), key=lambda item: (-item[1], item[0]))
    return head + ("; running " + ", ".join(f"{s} ({clock(t)})" for s, t in by_age) if running else "")


def summary_line(done: int, total: int, seconds: float, failed: tuple[str, ...] = (), not_started: int = 0) -> str:
    head = f"installs: {done}/{total} done in {took(seconds)}"
    if not failed:
        return head
    return head + f"; failed: {', '.join(failed)}" + (f"; {not_started} not started" if not_started else "")
