"""Optuna as Ray Tune's searcher, with a persistent study that survives a killed driver.

Ray snapshots the experiment (and the pickled searcher) every few seconds; the Optuna
study in SQLite is written at once. After a SIGKILL of the driver the study can be
ahead of Ray's last snapshot: a trial Ray still thinks is running may already be
finished in the study. Ray then resumes that trial from its last checkpoint and
reports into the closed Optuna trial, which raises UpdateFinishedTrialError and
crashes the resumed search. `ReconciledOptunaSearch` checks the study before writing,
and `close_orphans` fails the study trials that no Ray trial will ever finish.
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from ray.tune.search.optuna import OptunaSearch

from nuclei_search.internals import completed_trials, finished_in_study
from nuclei_search.search.experiment import STUDY_FILE

log = logging.getLogger(__name__)


def study_storage(experiment_dir: str | Path) -> optuna.storages.RDBStorage:
    """The experiment's Optuna storage (SQLite in the experiment folder; optuna-dashboard opens it)."""
    path = Path(experiment_dir).resolve() / STUDY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(
        f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 30}}
    )


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    """Multivariate TPE with group=True: models the conditional (EfficientNet variant) part jointly."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=4
        )


class ReconciledOptunaSearch(OptunaSearch):
    """OptunaSearch that tolerates a study ahead of Ray's snapshot (see module doc)."""

    def _already_finished(self, trial_id: str) -> bool:
        """True (and remembered) for a trial the study finished before Ray's snapshot knew it."""
        done = completed_trials(self)
        if trial_id in done or not finished_in_study(self, trial_id):
            return False
        done.add(trial_id)
        return True

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._already_finished(trial_id):
            log.info("trial %s already finished in the Optuna study; result not re-reported", trial_id)
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._already_finished(trial_id):
            return
        super().on_trial_complete(trial_id, result, error)


def close_orphans(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """Mark study trials still RUNNING as FAIL (asked by a driver that died before Ray saw them).

    Call after a search ends: then no Ray trial is running, so none of them will ever
    be told its result. Returns how many were closed.
    """
    study = optuna.load_study(study_name=study_name, storage=storage)
    closed = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        closed += 1
    if closed:
        log.info("closed %d orphaned Optuna trial(s) in study %s", closed, study_name)
    return closed
