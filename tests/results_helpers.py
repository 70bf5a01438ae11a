"""Shared pieces of the results tests (no tests here): one tiny real experiment per session
(the `tiny_experiment` fixture in conftest.py builds it).

The experiment is a real Ray Tune + Optuna + ASHA search on 12 synthetic images
(32 px crops, 4 base filters, plain encoder, 2 epochs). Searcher seed 3 makes its
first trial read a data source that does not exist, so it fails within seconds and
the experiment holds an errored trial next to finished (and possibly ASHA-stopped)
ones. It is built once per test run (one xdist worker builds it, the others wait), by whichever
results test module asks first, and reused read-only by the others (each module's fixture
re-reads it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from search_helpers import TINY_FIXED

EXPERIMENT = "results-tiny"
MISSING_DATA = "/nonexistent/results-test.zip"
SEARCH_SEED = 3  # trials: missing data (fails), then (3e-3, bce) and (1e-2, bce): see the module doc
EPOCHS = 2
SPACE = "\nfixed:\n" + TINY_FIXED.format(epochs=EPOCHS) + f"""params:
  data: {{choice: [synthetic:12, {MISSING_DATA}]}}
  learning_rate: {{choice: [3.0e-3, 1.0e-2]}}
  dropout: {{uniform: [0.0, 0.2]}}
  loss: {{choice: [bce, bce_dice]}}
"""


def cache_dir(tmp_path_factory) -> Path:
    """The prepared-data cache of the results tests (never the user's cache)."""
    path = tmp_path_factory.getbasetemp() / "results-cache"
    path.mkdir(exist_ok=True)
    return path


def shared_temp(tmp_path_factory) -> Path:
    """The test run's temporary folder, shared by pytest-xdist's workers (each has its own below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_experiment(tmp_path_factory) -> Path:
    """The test run's tiny experiment folder, searched on first use (~30-60 s on 2 CPUs) by one
    xdist worker while the others wait for it (pytest-xdist's recipe: a file lock in the shared
    temporary folder)."""
    from filelock import FileLock

    root = shared_temp(tmp_path_factory) / "results-experiment"
    with FileLock(str(root) + ".lock"):
        return _build_experiment(root)


def _build_experiment(root: Path) -> Path:
    import ray

    experiment = root / "storage" / EXPERIMENT
    done = root / "DONE"
    if done.is_file():
        return experiment
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    space = root / "space.yaml"
    space.write_text(SPACE)

    from nuclei_search.search.experiment import SearchOptions
    from nuclei_search.search.runner import run_search

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        options = SearchOptions(name=EXPERIMENT, space=str(space), num_samples=3, max_concurrent=2,
                                storage=str(root / "storage"), seed=SEARCH_SEED, max_failures=0)
        summary = run_search(options, progress=False)
    finally:
        if started_here:
            ray.shutdown()
    assert summary.trials == 3, summary
    assert summary.errored >= 1 and summary.terminated >= 1, (
        f"the tests need an errored and a finished trial; the Optuna sampler no longer draws the missing data "
        f"source in 1 of 3 trials with seed {SEARCH_SEED} (pick another SEARCH_SEED): {summary}")
    done.write_text("ok")
    return summary.experiment


def build_export(tmp_path_factory, experiment: Path, saved_model: bool = False) -> Path:
    """An export of the experiment's best trial, built once per session (per saved_model flag)."""
    from nuclei_search.results.export import export_trial

    out = tmp_path_factory.getbasetemp() / ("results-export-sm" if saved_model else "results-export")
    if (out / "model_card.json").is_file():
        return out
    export_trial(str(experiment), out, overwrite=True, saved_model=saved_model, verify=False)
    return out


def one_line_error(capsys) -> str:
    """The stderr of a failed CLI call, checked to be a single `error: ...` line."""
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert len([line for line in lines if line.startswith("error: ")]) == 1, err
    return lines[-1]
