"""Warm start: a new search begins with the finished trials of earlier ones.

`earlier_trials(space, fingerprint, refs)` reads, and `warm_start_study` adds to the new
experiment's Optuna study before the searcher samples anything, every finished trial
of the earlier experiments `refs` (Optuna's `add_trial`, as Ray Tune's
`evaluated_rewards` would): their parameters and their best `val_iou`, as recorded in
each earlier study. An earlier experiment must have been trained on the same data
(same prepared-data fingerprint); a trial is skipped, with one log line, when its
configuration lies outside the new space: a searched value out of range, or a value the
new space fixes that the trial did not have. Parameters the earlier space held fixed are
taken from the trial's resolved configuration, so spaces that grew a dimension still
share their history.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import optuna

from nuclei_search.config import TrialConfig
from nuclei_search.errors import ConfigError, ExperimentError, NucleiSearchError
from nuclei_search.search.experiment import EXPERIMENT_FILE, SPACE_FILE, STUDY_FILE, find_experiment, load_options
from nuclei_search.search.space import EFFICIENTNET, VARIANT_PARAM, SearchSpace

log = logging.getLogger(__name__)

#: fixed values that may differ between searches that share a history: the training budget
#: and where things are (the data itself is compared by fingerprint)
BUDGET_FIELDS = ("epochs", "validation_freq", "validation_tail", "data", "cache_dir")


def experiment_fingerprint(experiment: Path, space: SearchSpace) -> str | None:
    """The data fingerprint an experiment recorded, or computed from its data source if it is readable here."""
    recorded = json.loads((experiment / EXPERIMENT_FILE).read_text()).get("data_fingerprint")
    if recorded:
        return str(recorded)
    from nuclei_search.data_pipeline.preprocess import prepare

    config = space.resolve(space.corner_samples()[0])
    try:
        return prepare(config.data, cache_dir=config.cache_dir).fingerprint
    except NucleiSearchError as exc:
        log.info("warm start: the data of %s is not readable here (%s)", experiment.name, exc)
        return None


def _config_value(config: TrialConfig, name: str):
    if name == VARIANT_PARAM:
        return config.backbone.removeprefix(EFFICIENTNET) if config.backbone.startswith(EFFICIENTNET) else None
    value = getattr(config, name)
    return EFFICIENTNET if name == "backbone" and str(value).startswith(EFFICIENTNET) else value


def translate(space: SearchSpace, old_space: SearchSpace, params: dict) -> tuple[dict | None, str]:
    """(the new space's params for an earlier trial, '') or (None, why it is outside the new space)."""
    try:
        config = old_space.resolve(params)
    except ConfigError as exc:
        return None, f"its configuration does not resolve ({exc})"
    for name, value in space.fixed.items():
        if name in BUDGET_FIELDS or name in TrialConfig.field_names() and name not in TrialConfig.hyperparameter_names():
            continue
        if getattr(config, name) != value:
            return None, f"{name}={getattr(config, name)!r}, the new space fixes {value!r}"
    translated: dict = {}
    for p in space.params:
        if not p.active(translated):
            continue
        value = params[p.name] if p.name in params else _config_value(config, p.name)
        if value is None or not p.contains(value):
            return None, f"{p.name}={value!r} is outside the new space ({p.describe()})"
        translated[p.name] = value
    try:
        space.resolve(translated)
    except ConfigError as exc:
        return None, f"it is not a valid configuration in the new space ({exc})"
    return translated, ""


def earlier_trials(space: SearchSpace, fingerprint: str | None, refs: Sequence[str],
                   experiments_storage: str | None = None) -> list[optuna.trial.FrozenTrial]:
    """The finished trials of experiments `refs`, translated into the new space (ready for `add_trial`).

    Read-only: call it before the new experiment is created, so a bad reference changes nothing."""
    dists = space.optuna_distributions()
    out = []
    for ref in refs:
        path = find_experiment(ref, experiments_storage)
        options = load_options(path)
        if options.engine != "ray" or options.searcher != "optuna" or not (path / STUDY_FILE).is_file():
            raise ExperimentError(f"--warm-start {ref}: only Ray Tune + Optuna experiments keep an Optuna study "
                                  f"to start from ({options.engine}, {options.searcher})")
        old_space = SearchSpace.from_text((path / SPACE_FILE).read_text(), source=str(path / SPACE_FILE))
        theirs = experiment_fingerprint(path, old_space)
        if fingerprint is not None and theirs != fingerprint:
            raise ExperimentError(f"--warm-start {ref}: it was trained on other data (fingerprint {theirs}, "
                                  f"this search's data is {fingerprint})")
        old = optuna.load_study(study_name=options.name, storage=f"sqlite:///{path / STUDY_FILE}")
        for trial in old.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            params, why = translate(space, old_space, trial.params)
            if params is None:
                log.info("warm start: skipping trial %d of %s: %s", trial.number, options.name, why)
                continue
            out.append(optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, value=trial.value,
                user_attrs={"warm_start_from": f"{options.name}#{trial.number}"},
            ))
    return out


def warm_start_study(storage: optuna.storages.BaseStorage, study_name: str,
                     trials: Sequence[optuna.trial.FrozenTrial], direction: str = "maximize") -> int:
    """Add `trials` (from `earlier_trials`) to the new experiment's study; return how many."""
    if not trials:
        return 0
    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction, load_if_exists=True)
    study.add_trials(trials)
    log.info("warm start: %d earlier trial(s) added to study %s", len(trials), study_name)
    return len(trials)
