"""What every benchmark shares: where the real data is, where results go, timing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
#: the real Kaggle stage1_train (never copied into the repository)
DSB2018_ZIP = Path(os.environ.get("NUCLEI_SEARCH_DSB2018", REPO.parent / "shared/datasets/dsb2018/stage1_train.zip"))


def dsb2018_zip() -> Path:
    if not DSB2018_ZIP.is_file():
        raise SystemExit(f"error: real dataset missing: {DSB2018_ZIP} (set NUCLEI_SEARCH_DSB2018)")
    return DSB2018_ZIP


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" elsewhere): figures depend on it."""
    path = Path("/proc/cpuinfo")
    text = path.read_text() if path.is_file() else ""
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")


def machine() -> dict:
    return {"cpus": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "platform": platform.platform()}


@contextmanager
def timer():
    """with timer() as t: ...; t() -> seconds elapsed (while running or after)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def result(name: str, measure: str, target: str, value: float, unit: str, met: bool, **details) -> dict:
    """The record a benchmark's run() returns (the runner adds command, date, machine)."""
    return {"name": name, "measure": measure, "target": target, "value": value, "unit": unit, "met": bool(met),
            "details": details}


def write(record: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{record['name']}.json"
    path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    return path


def code_for_tree(code: str, tree: Path) -> str:
    """Benchmark code names the project's modules as installed today (`nuclei_search.models`...);
    in a source tree from before they moved under `nuclei_search` they are top-level (`models`)."""
    import re

    init = tree / "nuclei_search" / "__init__.py"
    if "__path__" in init.read_text():
        return code
    return re.sub(r"\bnuclei_search\.(data_pipeline|models|cluster|search|results)\b", r"\1", code)


def run_python(code: str, argument: str, tree: Path = REPO, env: dict | None = None, what: str = "") -> dict:
    """Run `python -c code argument` in a fresh process against the source `tree` (its own
    TensorFlow thread pools, Keras dtype policy and backend); the code prints JSON last."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code_for_tree(code, tree), argument], cwd=tree, capture_output=True,
                          text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(tree), **(env or {})})
    if proc.returncode:
        raise RuntimeError(f"{what or code[:80]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_in_subprocess(module: str, function: str, env: dict | None = None, **kwargs) -> dict:
    """`module.function(**kwargs)` in a fresh Python process (see `run_python`); returns what it returns."""
    code = ("import json, logging, sys; logging.basicConfig(level=logging.WARNING); "
            f"from {module} import {function} as f; "
            "print('\\n' + json.dumps(f(**json.loads(sys.argv[1])), default=float))")
    return run_python(code, json.dumps(kwargs), env=env, what=f"{module}.{function}({kwargs})")


@contextmanager
def source_trees(revisions: dict[str, str | None]) -> Iterator[dict[str, Path]]:
    """name -> source tree: this checkout (revision None) or a temporary git worktree of the
    revision, removed afterwards; for measuring code before and after a change side by side."""
    trees, made = {}, []
    with tempfile.TemporaryDirectory(prefix="benchmark_trees_") as tmp:
        try:
            for name, rev in revisions.items():
                if rev is None:
                    trees[name] = REPO
                    continue
                path = Path(tmp) / name
                subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev], check=True,
                               capture_output=True)
                made.append(path)
                trees[name] = path
            yield trees
        finally:
            for path in made:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)
