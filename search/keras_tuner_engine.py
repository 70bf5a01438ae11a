"""KerasTuner as a second search engine over the same YAML space, data and model code.

`--engine keras-tuner` runs KerasTuner's Hyperband or BayesianOptimization oracle in
this process (trials one after another; KerasTuner has no cluster scheduler). Each
trial calls the same `models.train.train` as the Ray trainable and writes the same
per-trial files as a Ray Tune trial folder (`params.json`, `result.json` lines,
`progress.csv`, a best checkpoint with `model.keras` + `train_state.json`), plus a
`trial_status.json`; so `leaderboard` and `compare` read both engines alike.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from nuclei_search.contract import (
    BEST_CHECKPOINT, KT_DIR, KT_STATUS_FILE, KT_TRIAL_PREFIX, LAST_CHECKPOINT, METRIC, RESULT_FILE, read_result_lines,
)
from nuclei_search.lock import writer_lock
from nuclei_search.search.experiment import (
    SearchOptions, check_space, claim, effective_space, find_experiment, local_dir, save_metadata,
)
from nuclei_search.search.space import SearchSpace
from nuclei_search.search.summary import SearchSummary

log = logging.getLogger(__name__)



def trial_folder(experiment: Path, trial_id: str) -> Path:
    return experiment / f"{KT_TRIAL_PREFIX}{trial_id}"


def _make_oracle(options: SearchOptions, epochs: int):
    import keras_tuner as kt

    objective = kt.Objective(METRIC, direction="max")
    failures = {"max_retries_per_trial": options.max_failures, "max_consecutive_failed_trials": 3}
    if options.kt_tuner == "hyperband":
        return kt.oracles.HyperbandOracle(objective=objective, max_epochs=epochs, factor=2,
                                          hyperband_iterations=1, seed=options.seed, **failures)
    return kt.oracles.BayesianOptimizationOracle(objective=objective, max_trials=options.num_samples,
                                                 seed=options.seed, **failures)


def _hyperband_round(hp, config, experiment: Path, folder: Path):
    """(config, checkpoint to resume from): a Hyperband round trains up to its epochs, continuing
    its parent trial's run (the parent's best checkpoint copied in, so the best so far counts)."""
    if "tuner/epochs" not in hp.values:
        return config, None
    config = config.replace(epochs=int(hp.get("tuner/epochs")))
    parent = hp.values.get("tuner/trial_id")
    candidate = trial_folder(experiment, parent) / LAST_CHECKPOINT if parent else None
    if candidate is None or not (candidate / "train_state.json").is_file():
        return config, None
    parent_best = candidate.parent / BEST_CHECKPOINT
    if parent_best.is_dir() and not (folder / BEST_CHECKPOINT).exists():
        shutil.copytree(parent_best, folder / BEST_CHECKPOINT)
    return config, str(candidate)


class _EpochRecorder:
    """The train hook of a KerasTuner trial: result.json and progress.csv rows as Ray Tune writes
    them, and the last and best checkpoints, each replaced atomically."""

    def __init__(self, folder: Path, trial_id: str, results):
        self.folder, self.trial_id, self.results = folder, trial_id, results
        self.started = time.perf_counter()

    def __call__(self, epoch: int, row: dict, model, state) -> None:
        from nuclei_search.models.train import write_history_csv

        record = {**row, "trial_id": self.trial_id, "training_iteration": epoch,
                  "time_total_s": time.perf_counter() - self.started, "timestamp": time.time()}
        self.results.write(json.dumps(record) + "\n")
        self.results.flush()
        write_history_csv([{**r, "trial_id": self.trial_id} for r in state.history], self.folder / "progress.csv")
        with tempfile.TemporaryDirectory(dir=self.folder) as tmp:
            state.save(tmp, model)
            if state.best.get("epoch") == epoch:
                _replace_dir(Path(tmp), self.folder / BEST_CHECKPOINT, copy=True)
            _replace_dir(Path(tmp), self.folder / LAST_CHECKPOINT, copy=False)


def _run_trial(space: SearchSpace, experiment: Path, trial) -> dict:
    """Train one KerasTuner trial into its folder; its objective, or FailedTrialError."""
    import keras_tuner as kt

    from nuclei_search.models.train import train

    hp = trial.hyperparameters
    sampled = space.keras_tuner_values(hp)
    folder = trial_folder(experiment, trial.trial_id)
    folder.mkdir(parents=True, exist_ok=True)
    config, resume_from = _hyperband_round(hp, space.resolve(sampled), experiment, folder)
    (folder / "params.json").write_text(json.dumps({**sampled, "resolved": config.to_dict()}, indent=1))
    status = {"status": "TERMINATED", "error": None, "engine": "keras-tuner"}
    with open(folder / "result.json", "a") as results:
        try:
            result = train(config, _EpochRecorder(folder, trial.trial_id, results), cpus=None, resume_from=resume_from)
        except Exception as exc:
            status.update(status="ERROR", error=f"{type(exc).__name__}: {exc}")
            (folder / KT_STATUS_FILE).write_text(json.dumps(status))
            raise kt.errors.FailedTrialError(str(exc)) from exc
    status["best_epoch"] = result.best.get("epoch")
    (folder / KT_STATUS_FILE).write_text(json.dumps(status))
    return {METRIC: float(result.best[METRIC])}


def _make_tuner(options: SearchOptions, space: SearchSpace, experiment: Path, overwrite: bool):
    import keras_tuner as kt

    class UNetTuner(kt.engine.base_tuner.BaseTuner):
        """A tuner with no hypermodel: each trial is one `models.train.train` run."""

        def _populate_initial_space(self):
            """Declare the whole YAML space up front (there is no hypermodel to build)."""
            hp = self.oracle.get_space()
            space.keras_tuner_values(hp)
            self.oracle.update_space(hp)

        def run_trial(self, trial, *args, **kwargs):
            return _run_trial(space, experiment, trial)

    oracle = _make_oracle(options, int(space.fixed.get("epochs") or 10))
    return UNetTuner(oracle=oracle, directory=str(experiment), project_name=KT_DIR, overwrite=overwrite)


def _replace_dir(src: Path, dest: Path, copy: bool) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if copy:
        shutil.copytree(src, tmp)
    else:
        shutil.move(str(src), tmp)
        src.mkdir()  # TemporaryDirectory removes it afterwards
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def run_keras_tuner(options: SearchOptions, *, overwrite: bool = False, progress: bool = True,
                    resume: bool = False):
    experiment = find_experiment(options.name, options.storage) if resume else local_dir(options.storage, options.name)
    with writer_lock(experiment, "experiment"):  # one writer, as for Ray Tune searches
        return _search(options, experiment, overwrite, progress, resume)


def _search(options: SearchOptions, experiment: Path, overwrite: bool, progress: bool, resume: bool):
    if resume:
        space = SearchSpace.from_text(check_space(experiment, options), source=options.space)
    else:
        space = effective_space(options)
        claim(experiment, overwrite)
        save_metadata(experiment, options, space.to_yaml())
    if space.start_from:  # KerasTuner's oracles have no API to enqueue given points
        log.warning("the space's start_from entries are not used by the keras-tuner engine "
                    "(Ray Tune + Optuna evaluates them first: --engine ray)")
    tuner = _make_tuner(options, space, experiment, overwrite=False)
    started = time.perf_counter()
    tuner.search(verbose=1 if progress else 0)
    wall = time.perf_counter() - started
    trials = list(tuner.oracle.trials.values())
    errored = [t for t in trials if str(t.status) in ("FAILED", "INVALID")]
    best_trial, best = None, {}
    completed = tuner.oracle.get_best_trials(1)
    if completed:
        best_trial = completed[0].trial_id
        best = {METRIC: float(completed[0].score)}
    trial_seconds = 0.0
    for t in trials:
        rows = read_result_lines(trial_folder(experiment, t.trial_id) / RESULT_FILE)
        trial_seconds += float(rows[-1].get("time_total_s") or 0.0) if rows else 0.0
    return SearchSummary(experiment=experiment, trials=len(trials), terminated=len(trials) - len(errored),
                         errored=len(errored), best_trial=best_trial, best=best, wall_seconds=wall,
                         trial_seconds=trial_seconds, concurrency=1)
