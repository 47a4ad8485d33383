"""meshspec's source tree: what the programs' meshspec is installed from, in the docker runtime's
image and in the process runtime's install cache, and the digest that names that install.

The deploy's own meshspec (the project's venv) may run on an interpreter only root can reach
(pyenv under /root): the programs get their own install, from Debian's Python, so each can run
as its own user.
"""

from __future__ import annotations

import io
import tarfile
from functools import cache
from pathlib import Path

import meshspec
from meshspec.common.digest import digest_bytes


def source_root() -> Path:
    """meshspec's source tree, the checkout this meshspec runs from."""
    root = Path(meshspec.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise SystemExit(f"meshspec's programs are installed from its source tree, not found above "
                         f"{meshspec.__file__}: install meshspec from a checkout (make venv)")
    return root


def source_files(root: Path) -> list[Path]:
    """meshspec's source as an install builds it: pyproject, README, the package."""
    package = sorted(p for p in (root / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [root / "pyproject.toml", root / "README.md", *package]


def source_digest(root: Path) -> str:
    """What an install of meshspec depends on. Not the README: it only feeds the package's description."""
    return digest_bytes(b"".join(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0"
                                 for path in source_files(root) if path.name != "README.md"))


@cache
def installed_build() -> str:
    """The digest of the meshspec this deploy runs, read once: the programs it starts run an
    install of exactly this source (and restart when it changes)."""
    return source_digest(source_root())


@cache
def source_archive() -> bytes:
    """meshspec's source as an install builds it (`source_files`), a gzipped tar, paths relative to
    the tree: what the deploy uploads to a host that installs meshspec, which needs no checkout."""
    root, out = source_root(), io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path in source_files(root):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return out.getvalue()
