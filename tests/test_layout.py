"""The package's layout rules, checked on its source: layering, no cycles, small modules."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parents[1] / "scotsearch"
#: The CLI layer: may import the library, never the reverse.
CLI = ("scotsearch.cli", "scotsearch.commands", "scotsearch.__main__")
MAX_LINES = 500


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """scotsearch modules ``path`` imports at module level (type-checking imports excluded)."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("scotsearch"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + is_pkg]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if mod.startswith("scotsearch"):
                    out.add(mod)
                    # `from scotsearch.pkg import sub` may name a submodule
                    out.update(f"{mod}.{a.name}" for a in node.names)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body + node.orelse + getattr(node, "finalbody", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)

    visit(tree.body)
    return out


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_no_import_cycle() -> None:
    graphlib.TopologicalSorter(GRAPH).static_order()  # raises CycleError on a cycle


def test_the_library_never_imports_the_cli_layer() -> None:
    bad = {m: sorted(i for i in deps if i.startswith(CLI))
           for m, deps in GRAPH.items() if not m.startswith(CLI)}
    assert not {m: d for m, d in bad.items() if d}


def test_private_modules_are_used_inside_their_package_only() -> None:
    # scotsearch.cache._format is the cache's business; others go through scotsearch.cache.
    bad = []
    for m, deps in GRAPH.items():
        for d in deps:
            parts = d.split(".")
            private = [k for k, p in enumerate(parts) if p.startswith("_") and k > 0]
            if private and d != "scotsearch._version":
                owner = ".".join(parts[: private[0]])
                if not (m == owner or m.startswith(owner + ".")) and owner != "scotsearch":
                    bad.append((m, d))
    assert not bad


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str) -> None:
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{module} has {n} lines; split it by concern"


def test_benchmarks_and_tests_import_the_library_not_the_cli() -> None:
    # Benchmarks time the library. Tests of a command drive the command module itself
    # (``from scotsearch.commands import beam``); none reaches into one for library code
    # (``from scotsearch.commands.beam import run_beam`` was such a case).
    root = PACKAGE.parent
    offenders = []
    for path in [*root.glob("benchmarks/*.py"), *root.glob("tests/*.py")]:
        bench = path.parent.name == "benchmarks"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(CLI):
                if bench or node.module not in ("scotsearch.commands",):
                    offenders.append(f"{path.name}: from {node.module} import ...")
    assert not offenders, offenders
