"""The package has no import cycles: every module imports alone, and the graph of xentlab imports is acyclic."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "xentlab"
MODULES = sorted(
    ".".join(("xentlab", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
    for p in SRC.rglob("*.py")
)


def imported_xentlab_modules(path: Path) -> set[str]:
    """Every xentlab module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xentlab"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("xentlab"))
    return {m for m in found if m in MODULES}


def test_import_graph_has_no_cycle():
    graph = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(("xentlab", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        # A package's own __init__ re-exports its submodules; a submodule importing its package is not a cycle.
        graph[name] = {m for m in imported_xentlab_modules(p) if not name.startswith(m + ".") and m != name}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_every_module_imports_first_in_a_fresh_interpreter():
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    for order in (MODULES, MODULES[::-1]):
        result = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
