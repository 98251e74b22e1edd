"""The import graph: no cycles, every module imports alone, the layers of DESIGN.md §4 point down with no exception,
and the installed package never imports benchmarks/."""

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


# Which layer may import which (DESIGN.md §4), with no exception. A module's layer is the longest prefix listed here;
# it may import its own layer and the prefixes in its set. The ground (the expected-error type, secrets masking, the
# closed choices, the metric table, the user-code hooks, the charts' style) imports only the error type. core, data
# and runtime never reach config, tracking, report or cli; report reads runs only through tracking.store and never
# imports core; cli may import everything.
GROUND = {"xentlab.errors", "xentlab.masking", "xentlab.choices", "xentlab.metric_table", "xentlab.hooks",
          "xentlab.chart_style"}
ALLOWED = {
    **{ground: {"xentlab.errors"} - {ground} for ground in GROUND},
    "xentlab.data": GROUND,
    "xentlab.core": GROUND | {"xentlab.data"},
    "xentlab.runtime": GROUND | {"xentlab.core", "xentlab.data"},
    "xentlab.config": GROUND | {"xentlab.core", "xentlab.data", "xentlab.runtime"},
    "xentlab.tracking": GROUND | {"xentlab.config", "xentlab.core", "xentlab.data", "xentlab.runtime"},
    "xentlab.report": GROUND | {"xentlab.tracking.store"},
    "xentlab.cli": {"xentlab"},
}


def layer_of(module: str) -> str:
    candidates = [k for k in ALLOWED if module == k or module.startswith(k + ".")]
    assert candidates, f"{module} is in no layer: add its folder to ALLOWED (tests/test_imports.py)"
    return max(candidates, key=len)


def test_layers_import_only_downwards():
    bad = []
    for p in SRC.rglob("*.py"):
        name = ".".join(("xentlab", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        if name == "xentlab":
            continue
        layer = layer_of(name)
        allowed = ALLOWED[layer] | {layer}
        for imported in imported_xentlab_modules(p):
            if imported == "xentlab" or not any(imported == a or imported.startswith(a + ".") for a in allowed):
                if imported != "xentlab":
                    bad.append(f"{name} ({layer}) imports {imported}")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_the_layer_test_sees_a_violation():
    # The rule itself: core importing tracking or config is refused, report importing core too, cli anything.
    assert layer_of("xentlab.core.losses") == "xentlab.core"
    assert not any("xentlab.tracking.store".startswith(a) for a in ALLOWED["xentlab.core"])
    assert not any("xentlab.config.schema".startswith(a) for a in ALLOWED["xentlab.runtime"])
    assert not any("xentlab.core.probabilities".startswith(a) for a in ALLOWED["xentlab.report"])
    assert layer_of("xentlab.choices") == "xentlab.choices" and ALLOWED["xentlab.choices"] == {"xentlab.errors"}


def imports_benchmarks(source: str) -> bool:
    """Whether Python `source` imports the benchmarks folder (at the top or inside a function)."""
    for node in ast.walk(ast.parse(source)):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        if any(n == "benchmarks" or n.startswith("benchmarks.") for n in names):
            return True
    return False


def test_the_installed_package_never_imports_benchmarks():
    # benchmarks/ stays outside the wheel: an import of it works from a checkout and fails once installed.
    assert imports_benchmarks("def f():\n    from benchmarks.common import text_slice\n")
    assert imports_benchmarks("import benchmarks.resnet_step as b\n")
    assert not imports_benchmarks("from xentlab.cli import benchmarks_view\nimport benchmarksx\n")
    found = [str(p.relative_to(SRC.parent)) for p in SRC.rglob("*.py") if imports_benchmarks(p.read_text())]
    assert not found, f"src imports benchmarks/ (not installed with the package): {found}"
