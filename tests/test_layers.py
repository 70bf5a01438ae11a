"""The package's layers only point down, and no two modules import each other.

CLI → results → search → cluster → models → data_pipeline → nuclei_search (config,
contract, errors, lock, outputs), all installed under `nuclei_search`: every import of a project module (function-level
imports included) goes to the same layer or a lower one, and the module graph has no
cycle. Read from the sources with `ast`, nothing imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The repository's folders, bottom layer first; installed as nuclei_search.<folder> (pyproject.toml).
PACKAGES = ("nuclei_search", "data_pipeline", "models", "cluster", "search", "results")
TOP = ("nuclei_search.cli", "nuclei_search.__main__")


def module_name(path: Path) -> str:
    """The installed name of a source file: nuclei_search/x.py -> nuclei_search.x, models/x.py -> nuclei_search.models.x."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    prefix = () if parts[0] == "nuclei_search" else ("nuclei_search",)
    return ".".join(prefix + parts).removesuffix(".__init__")


def layer(module: str) -> int:
    if module.startswith(TOP):
        return len(PACKAGES)
    part = module.split(".")[1] if "." in module else ""
    return PACKAGES.index(part) if part in PACKAGES else 0


def project_imports(path: Path) -> list[str]:
    """Every module name an import statement of `path` names (function-level imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    return {name: {f for f in project_imports(path) if f in modules and f != name} for name, path in modules.items()}


def test_the_installed_names_are_all_under_nuclei_search():
    """No source, benchmark or test imports a bare `models`, `search`... (they would collide with a
    user's own packages of those names; an install has only `nuclei_search`)."""
    bare = sorted(f"{path.relative_to(ROOT)}: {name}"
                  for folder in PACKAGES + ("benchmarks", "tests") for path in (ROOT / folder).rglob("*.py")
                  for name in project_imports(path) if name.split(".")[0] in PACKAGES[1:])
    assert not bare, "imports of a bare top-level name: " + ", ".join(bare)


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


#: Third-party libraries slow enough to import (or to start) that modules import them lazily.
HEAVY = {"tensorflow", "keras", "ray", "optuna", "keras_tuner", "plotly", "matplotlib", "pandas", "skimage",
         "scipy", "cv2", "starlette", "uvicorn"}


def top_level_imports(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_function_level_imports_are_only_for_heavy_libraries():
    """A project module is imported inside a function only when importing it loads a heavy
    third-party library (directly or through its own module-level imports); the rest are
    imported at the top, where a reader sees a module's dependencies."""
    modules = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    top = {name: top_level_imports(path) for name, path in modules.items()}
    heavy: dict[str, bool] = {}

    def is_heavy(name: str) -> bool:
        if name not in heavy:
            heavy[name] = False  # a cycle cannot make a module heavy
            heavy[name] = any(n.split(".")[0] in HEAVY or (n in modules and is_heavy(n)) for n in top[name])
        return heavy[name]

    light_lazy = []
    for name, path in modules.items():
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if not isinstance(node, ast.ImportFrom) or node.module not in modules:
                        continue
                    targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names
                                               if f"{node.module}.{a.name}" in modules]  # submodules
                    if not any(is_heavy(target) for target in targets):
                        light_lazy.append(f"{name}.{function.name}: {node.module}")
    assert not light_lazy, "import these at the top of the module: " + ", ".join(sorted(light_lazy))
