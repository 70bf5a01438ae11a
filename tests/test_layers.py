"""The package's layers only point down, and no two modules import each other.

CLI → results → search → cluster → models → data_pipeline → nuclei_search (config,
contract, errors, lock, outputs): every import of a project module (function-level
imports included) goes to the same layer or a lower one, and the module graph has no
cycle. Read from the sources with `ast`, nothing imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nuclei_search", "data_pipeline", "models", "cluster", "search", "results")
TOP = ("nuclei_search.cli", "nuclei_search.__main__")


def layer(module: str) -> int:
    if module.startswith(TOP):
        return len(PACKAGES)
    return PACKAGES.index(module.split(".")[0])


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            targets |= {f for f in found if f in modules and f != name}
        graph[name] = targets
    return graph


def test_imports_only_point_down():
    upward = sorted((m, t) for m, targets in import_graph().items() for t in targets if layer(t) > layer(m))
    assert not upward, "imports pointing up a layer: " + ", ".join(f"{m} -> {t}" for m, t in upward)


def test_no_two_modules_import_each_other():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"modules importing each other: {cycles}"
