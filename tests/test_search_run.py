"""Real Ray Tune searches (num_cpus=2), real Optuna, tiny U-Nets on synthetic nuclei.

Failing and NaN trials are a row of the reliability matrix: tests/reliability/test_trial_raises_or_nan.py.
"""

from __future__ import annotations

import optuna
import pytest

from nuclei_search.cli import main
from nuclei_search.search.experiment import SearchOptions
from nuclei_search.search.runner import run_search
from search_helpers import trial_dirs, trial_results, trial_starts, write_space

pytestmark = pytest.mark.slow  # trains, searches or starts Ray (README: the fast lane skips it)


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
    iterations, best_of_trial = [], []
    for trial in trials:
        rows = trial_results(trial)
        assert rows, f"{trial.name} reported nothing"
        for k, row in enumerate(rows):
            assert 0.0 <= row["val_iou"] <= 1.0 and "val_dice" in row and "val_map" in row
            # what ASHA and Optuna rank by: the trial's best val_iou so far
            assert row["val_iou_best"] == max(r["val_iou"] for r in rows[: k + 1])
        iterations.append(rows[-1]["training_iteration"])
        best_of_trial.append(rows[-1]["val_iou_best"])
        # a checkpoint holding the model and the training state
        checkpoints = sorted(trial.glob("checkpoint_*"))
        assert checkpoints and (checkpoints[-1] / "model.keras").is_file()
        assert list(trial.glob("events.out.tfevents*")), "no TensorBoard log"
    # ASHA stopped at least one trial before the last epoch; at least one ran to the end
    assert min(iterations) < 4 and max(iterations) == 4, iterations
    # by default a worker process runs trial after trial (Ray's reuse_actors): 4 trials, 2 slots, 2 processes
    pids = [start["pid"] for trial in trials for start in trial_starts(trial)]
    assert len(pids) == 4 and len(set(pids)) == 2, pids  # each trial started once

    # the Optuna study persists in SQLite inside the experiment folder, one trial per Ray trial
    study = optuna.load_study(study_name="quick4", storage=f"sqlite:///{experiment / 'optuna.db'}")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 4
    # each study trial's value is its Ray trial's best epoch, not the epoch it stopped at
    assert sorted(t.value for t in finished) == pytest.approx(sorted(best_of_trial))
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


def test_relative_data_and_cache_paths_reach_trials_absolute(tmp_path, monkeypatch):
    from nuclei_search.search.runner import effective_space

    (tmp_path / "data").mkdir()
    space = write_space(tmp_path, epochs=1)
    monkeypatch.chdir(tmp_path)
    options = SearchOptions(name="rel", space=str(space), data="data", cache_dir="cache")
    fixed = effective_space(options).fixed
    assert fixed["data"] == str(tmp_path / "data") and fixed["cache_dir"] == str(tmp_path / "cache")
    assert effective_space(SearchOptions(name="syn", space=str(space), data="synthetic:8")).fixed["data"] == "synthetic:8"


def test_grace_period_sets_the_asha_rungs_and_the_median_rule(tmp_path):
    from nuclei_search.search.runner import build_scheduler

    space = str(write_space(tmp_path))
    rungs = lambda options: sorted(milestone for milestone, _ in build_scheduler(options, 32)._brackets[0]._rungs)
    assert rungs(SearchOptions(name="d", space=space)) == [8, 16, 32]  # default grace: epochs // 4
    assert rungs(SearchOptions(name="g", space=space, grace_period=4)) == [4, 8, 16, 32]
    median = build_scheduler(SearchOptions(name="m", space=space, scheduler="median", grace_period=5), 32)
    assert median._grace_period == 5


def test_bad_grace_period_is_one_line_exit_2_before_anything_is_written(tmp_path, capsys):
    from search_helpers import assert_one_line_error, run_cli

    space = write_space(tmp_path)
    storage = tmp_path / "exp"
    for extra, needle in ((["--grace-period", "0"], "--grace-period must be >= 1"),
                          (["--grace-period", "2", "--scheduler", "hyperband"], "needs --scheduler asha or median")):
        code, _, err = run_cli(capsys, "run", "--space", space, "--name", "g", "--storage", storage, "--quiet", *extra)
        assert_one_line_error(code, err, needle)
    assert not storage.exists()
