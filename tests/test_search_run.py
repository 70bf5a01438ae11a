"""Real Ray Tune searches (num_cpus=2), real Optuna, tiny U-Nets on synthetic nuclei."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import ray

from cluster.runtime import connect

from nuclei_search.cli import main
from search.experiment import SearchOptions
from search.runner import run_search
from search_helpers import trial_dirs, trial_results, write_space


@pytest.fixture(scope="module")
def local_ray():
    ray.shutdown()
    connect(None, num_cpus=2)
    yield
    ray.shutdown()


def test_optuna_asha_search_completes_with_results(local_ray, tmp_path):
    space = write_space(tmp_path, epochs=4)
    options = SearchOptions(name="quick4", space=str(space), num_samples=4, max_concurrent=2,
                            storage=str(tmp_path / "exp"), seed=3)
    summary = run_search(options, progress=False)
    experiment = summary.experiment
    assert summary.trials == 4 and summary.errored == 0
    assert 0.0 <= summary.best["val_iou"] <= 1.0

    trials = trial_dirs(experiment)
    assert len(trials) == 4
    iterations = []
    for trial in trials:
        rows = trial_results(trial)
        assert rows, f"{trial.name} reported nothing"
        for row in rows:
            assert 0.0 <= row["val_iou"] <= 1.0 and "val_dice" in row and "val_map" in row
        iterations.append(rows[-1]["training_iteration"])
        # a checkpoint holding the model and the training state
        checkpoints = sorted(trial.glob("checkpoint_*"))
        assert checkpoints and (checkpoints[-1] / "model.keras").is_file()
        assert list(trial.glob("events.out.tfevents*")), "no TensorBoard log"
    # ASHA stopped at least one trial before the last epoch; at least one ran to the end
    assert min(iterations) < 4 and max(iterations) == 4, iterations

    # the Optuna study persists in SQLite inside the experiment folder, one trial per Ray trial
    study = optuna.load_study(study_name="quick4", storage=f"sqlite:///{experiment / 'optuna.db'}")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 4
    assert {"learning_rate", "dropout", "loss"} <= set(study.trials[0].params)
    assert (experiment / "space.yaml").is_file() and (experiment / "nuclei_search.json").is_file()


def test_existing_experiment_is_refused_and_untouched(local_ray, tmp_path, capsys):
    storage = tmp_path / "exp"
    (storage / "taken").mkdir(parents=True)
    (storage / "taken" / "nuclei_search.json").write_text("{}")
    (storage / "taken" / "keep.txt").write_text("precious")
    space = write_space(tmp_path)
    code = main(["run", "--space", str(space), "--name", "taken", "--storage", str(storage), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "--overwrite" in err and "\n" not in err
    assert (storage / "taken" / "keep.txt").read_text() == "precious"


def test_failing_and_nan_trials_end_as_error_and_the_search_completes(local_ray, tmp_path):
    text = """
fixed:
  image_size: 32
  epochs: 2
  batch_size: 4
  base_filters: 4
  backbone: none
  decoder_depth: 3
  instance_method: cc
params:
  data: {choice: [synthetic:12, /nonexistent/dsb.zip]}
  learning_rate: {choice: [3.0e-3, 1.0e+30]}
"""
    space = tmp_path / "fail.yaml"
    space.write_text(text)
    options = SearchOptions(name="failing", space=str(space), num_samples=1, max_concurrent=2,
                            searcher="grid", scheduler="none", storage=str(tmp_path / "exp"), max_failures=1)
    summary = run_search(options, progress=False)
    assert summary.trials == 4
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(summary.experiment))
    by_config = {(t.config["data"], t.config["learning_rate"]): t for t in analysis.trials}
    good = by_config[("synthetic:12", 3e-3)]
    assert good.status == "TERMINATED" and 0.0 <= good.last_result["val_iou"] <= 1.0
    missing = by_config[("/nonexistent/dsb.zip", 3e-3)]
    assert missing.status == "ERROR"
    assert "unknown data source '/nonexistent/dsb.zip'" in open(missing.error_file).read()
    diverged = by_config[("synthetic:12", 1e30)]
    assert diverged.status == "ERROR"
    assert "TrialDiverged" in open(diverged.error_file).read()
    # retried once (FailureConfig max_failures=1) before giving up
    assert diverged.num_failures == 2
