"""KerasTuner as a second engine over the same YAML space, data and model code."""

from __future__ import annotations

import json

import pytest

from nuclei_search.search.experiment import SearchOptions
from nuclei_search.search.runner import run_search
from search_helpers import trial_results, write_space

pytestmark = pytest.mark.slow  # trains, searches or starts Ray (README: the fast lane skips it)


@pytest.mark.parametrize("kt_tuner", ["hyperband", "bayesian"])
def test_keras_tuner_engine_on_the_same_space(tmp_path, kt_tuner):
    space = write_space(tmp_path, epochs=2)
    options = SearchOptions(name=f"kt-{kt_tuner}", space=str(space), engine="keras-tuner", kt_tuner=kt_tuner,
                            num_samples=2, storage=str(tmp_path / "exp"), seed=0)
    summary = run_search(options, progress=False)
    experiment = summary.experiment
    assert summary.trials >= 2 and summary.errored == 0
    assert 0.0 <= summary.best["val_iou"] <= 1.0
    trials = sorted(experiment.glob("kt_trial_*"))
    assert len(trials) == summary.trials
    for trial in trials:
        params = json.loads((trial / "params.json").read_text())
        # values come from the YAML space and resolve to the fixed values too
        assert params["learning_rate"] in (1e-6, 3e-3, 1e-2) and params["resolved"]["image_size"] == 32
        rows = trial_results(trial)
        assert rows and all(0.0 <= r["val_iou"] <= 1.0 for r in rows)
        assert {"val_dice", "val_map", "training_iteration", "time_total_s"} <= set(rows[-1])
        assert (trial / "checkpoint_best" / "model.keras").is_file()
        assert json.loads((trial / "trial_status.json").read_text())["status"] == "TERMINATED"
    if kt_tuner == "hyperband":
        # Hyperband continues a promising trial from its parent's checkpoint for more epochs
        assert any(trial_results(t)[-1]["training_iteration"] == 2 for t in trials)
    assert json.loads((experiment / "nuclei_search.json").read_text())["engine"] == "keras-tuner"
