"""The house keeps its shape (ARCHITECTURE.md): imports follow the data flow, pure stages do no I/O.

Read with `ast` from the source, so a lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import gc
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# What each part of meshspec may import of meshspec (besides itself). `meshspec` is the package's
# __init__ (its version). Data flow: spec -> plan -> render -> converge -> verify; runtime/ runs on
# the hosts for months and stands apart; cli.py sits on top of everything.
ALLOWED = {
    "meshspec": set(),
    "common": set(),
    "spec": {"common"},
    "plan": {"common", "spec"},
    "render": {"meshspec", "common", "spec", "plan"},
    "settings": {"common", "spec", "plan"},
    "converge": {"meshspec", "common", "spec", "plan", "render", "settings"},
    "verify": {"meshspec", "common", "spec", "plan", "render", "settings", "converge", "runtime"},
    "runtime": {"meshspec", "common"},
    # chaos acts on a running mesh as verify reads one: it may use what verify may, and verify
    "chaos": {"meshspec", "common", "spec", "plan", "render", "settings", "converge", "verify", "runtime"},
    # the test cluster of network namespaces stands apart: it writes a hosts file, and hides from
    # its hosts where meshspec's checkout is (converge.source, that decision's one home)
    "cluster": {"converge"},
    "cli": {"meshspec", "common", "spec", "plan", "render", "settings", "converge", "verify", "runtime", "chaos",
            "cluster"},
}
PURE = {"spec", "plan", "render"}
# Libraries that talk to the world: processes, sockets, HTTP, Consul, Docker, pyinfra, supervisord.
IO_LIBRARIES = {"os", "subprocess", "socket", "shutil", "tempfile", "signal", "threading", "asyncio", "http",
                "urllib", "xmlrpc", "httpx", "requests", "aiohttp", "consul", "docker", "pyinfra", "supervisor"}
PURE_MODULES = {"urllib.parse"}  # string functions (quoting, splitting URLs) in an I/O package


def part_of(module: str) -> str:
    """'meshspec.render.haproxy' -> 'render'; 'meshspec' -> 'meshspec'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "meshspec"


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module `source` imports (absolute names; `from meshspec import x` names meshspec.x)."""
    found = set()
    # CPython 3.11.7 can fail a parse with "AST constructor recursion depth mismatch" when a
    # garbage-collected object's finalizer (an earlier test's aiohttp task) runs in the middle of it.
    gc.disable()
    try:
        parsed = ast.parse(source)
    finally:
        gc.enable()
    for node in ast.walk(parsed):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module
            if name == "meshspec":  # its version, or a module of it
                found |= {"meshspec" if a.name == "__version__" else f"meshspec.{a.name}" for a in node.names}
            else:
                found.add(name)
    return found


def read_tree(src: Path = SRC) -> dict[str, set[str]]:
    """{module: the modules it imports} for every module of meshspec under `src`."""
    tree = {}
    for path in sorted((src / "meshspec").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        tree[module] = imports_of(path.read_text(), module, is_package)
    return tree


def backward_imports(tree: dict[str, set[str]]) -> list[str]:
    out = []
    for module, imported in sorted(tree.items()):
        mine = part_of(module)
        for name in sorted(i for i in imported if i == "meshspec" or i.startswith("meshspec.")):
            theirs = part_of(name)
            if theirs != mine and theirs not in ALLOWED[mine]:
                out.append(f"{module} imports {name}: {mine} may import only {sorted(ALLOWED[mine]) or 'nothing'}")
    return out


def impure_imports(tree: dict[str, set[str]]) -> list[str]:
    """I/O libraries reached from a pure stage, directly or through the meshspec modules it imports."""
    out = []
    for module in sorted(m for m in tree if part_of(m) in PURE):
        seen, todo = set(), [module]
        while todo:
            current = todo.pop()
            if current in seen or current not in tree:
                continue
            seen.add(current)
            for name in tree[current]:
                if name.split(".")[0] in IO_LIBRARIES and name not in PURE_MODULES:
                    via = "" if current == module else f" (through {current})"
                    out.append(f"{module} reaches {name}{via}")
                todo += [n for n in tree[current] if n.startswith("meshspec.")]
    return sorted(set(out))


# Read while pytest collects, before any test has left threads or pending tasks behind.
TREE = read_tree()


def test_imports_follow_the_data_flow():
    assert backward_imports(TREE) == []


def test_pure_stages_reach_no_io_library():
    assert impure_imports(TREE) == []


def test_every_part_is_known():
    """A new top-level package or module takes its place in ALLOWED (and in ARCHITECTURE.md)."""
    assert {part_of(m) for m in TREE} <= ALLOWED.keys()


def test_at_most_four_top_level_modules_beside_the_packages():
    modules = sorted(p.name for p in (SRC / "meshspec").glob("*.py"))
    assert len(modules) <= 4, modules


def test_architecture_md_names_every_package():
    text = (SRC.parent / "ARCHITECTURE.md").read_text()
    packages = [p.name for p in (SRC / "meshspec").iterdir() if (p / "__init__.py").exists()]
    assert [p for p in packages if f"`{p}/`" not in text] == []


# --- the checks themselves catch what they are for ---------------------------------------------


def tree_with(module: str, source: str) -> dict[str, set[str]]:
    return {**TREE, module: imports_of(source, module)}


@pytest.mark.parametrize(("module", "source"), [
    ("meshspec.render.programs", "from meshspec.converge.engine import client\n"),  # render -> converge
    ("meshspec.plan.instances", "import meshspec.render.haproxy\n"),  # plan -> render
    ("meshspec.runtime.proxy.controller", "from meshspec.render.haproxy import render_haproxy\n"),  # runtime -> render
    ("meshspec.runtime.agent.core", "def f():\n    from meshspec.verify import run\n"),  # a lazy import counts
    ("meshspec.spec.loader", "from meshspec import settings\n"),  # spec -> settings
    ("meshspec.converge.host", "from meshspec.verify.run import verify\n"),  # converge -> verify
])
def test_a_backward_import_is_caught(module, source):
    found = backward_imports(tree_with(module, source))
    assert len(found) == 1 and found[0].startswith(f"{module} imports meshspec."), found


def test_a_relative_backward_import_is_caught():
    found = backward_imports(tree_with("meshspec.render.programs", "from ..converge import engine\n"))
    assert found and "meshspec.converge" in found[0]


@pytest.mark.parametrize("source", ["import subprocess\n", "from pyinfra import host\n", "import httpx\n"])
def test_io_in_a_pure_stage_is_caught(source):
    found = impure_imports(tree_with("meshspec.render.programs", source))
    assert f"meshspec.render.programs reaches {source.split()[1]}" in found, found


def test_io_reached_through_another_module_is_caught():
    tree = tree_with("meshspec.common.digest", "import socket\n")
    assert "meshspec.render.registrations reaches socket (through meshspec.common.digest)" in impure_imports(tree)
