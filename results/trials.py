"""Read the trials of an experiment, whichever engine ran it, into one record type.

Ray Tune experiments are read through `ray.tune.ExperimentAnalysis` (status, errors,
failure counts; it needs no running Ray) plus each trial folder's `params.json`,
`result.json` lines and `checkpoint_*/train_state.json`. KerasTuner experiments are
read from their `kt_trial_<id>/` folders (same files, plus `trial_status.json`).

Everything downstream (leaderboard, report, export) starts from `load_experiment`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nuclei_search.compat import old_module_names
from nuclei_search.config import TrialConfig
from nuclei_search.contract import (
    CARD_FILE,
    ENSEMBLE_RECORD,
    EXPERIMENT_FILE,
    KT_STATUS_FILE,
    KT_TRIAL_PREFIX,
    METRIC,
    MODEL_FILE,
    RAY_STATE_PATTERN,
    STATE_FILE,
    TRAIN_HISTORY_FILE,
    read_result_lines,
)
from nuclei_search.errors import ConfigError, ExperimentError
from nuclei_search.search.experiment import SPACE_FILE, SearchOptions, find_experiment, load_options
from nuclei_search.search.space import REFIT_OF, SearchSpace

log = logging.getLogger(__name__)

# Keys Ray adds to a trial's config that are not hyperparameters.
_NOT_PARAMS = {"resolved"}


@dataclass
class TrialRecord:
    """One trial of one experiment, engine independent."""

    trial_id: str
    experiment: str  # experiment name
    engine: str  # "ray" | "keras-tuner"
    status: str  # TERMINATED | ERROR | RUNNING | PENDING | PAUSED
    folder: Path | None
    params: dict[str, Any]  # the sampled (searched) values, as the searcher drew them
    config: dict[str, Any] | None  # the full resolved TrialConfig (None if it cannot be resolved)
    history: list[dict] = field(default_factory=list)  # one row per reported epoch
    checkpoints: dict[int, Path] = field(default_factory=dict)  # epoch -> checkpoint folder
    error: str | None = None  # the full error text of an errored trial
    num_failures: int = 0
    target_epochs: int | None = None  # the search's full training length (None: the config's epochs)
    continued_by: str | None = None  # KerasTuner Hyperband: the trial that resumed this one's checkpoint
    refit_of: str | None = None  # a refit trial: the exploration trial whose configuration it trained again

    # -- derived --------------------------------------------------------------
    @property
    def best(self) -> dict | None:
        """The reported row with the highest val_iou (the first one on ties), or None."""
        rows = [r for r in self.history if _finite(r.get(METRIC))]
        if not rows:
            return None
        return max(rows, key=lambda r: (float(r[METRIC]), -_epoch(r)))

    @property
    def best_epoch(self) -> int | None:
        best = self.best
        return _epoch(best) if best else None

    @property
    def epochs_run(self) -> int:
        return max((_epoch(r) for r in self.history), default=0)

    @property
    def epochs_planned(self) -> int | None:
        if self.target_epochs:
            return int(self.target_epochs)
        return int(self.config["epochs"]) if self.config and self.config.get("epochs") else None

    @property
    def seconds(self) -> float:
        if not self.history:
            return 0.0
        return float(self.history[-1].get("time_total_s") or 0.0)

    @property
    def started(self) -> float | None:
        """Unix time the trial's first epoch started (approximate: first report - its duration)."""
        for row in self.history:
            if row.get("timestamp") is not None:
                return float(row["timestamp"]) - float(row.get("time_this_iter_s") or row.get("time_total_s") or 0.0)
        return None

    @property
    def ended(self) -> float | None:
        stamps = [float(r["timestamp"]) for r in self.history if r.get("timestamp") is not None]
        return max(stamps) if stamps else None

    @property
    def best_checkpoint(self) -> Path | None:
        """The checkpoint folder saved at the best epoch (None if it was not kept)."""
        epoch = self.best_epoch
        return self.checkpoints.get(epoch) if epoch is not None else None

    @property
    def error_line(self) -> str | None:
        """The one line that says why the trial failed (the exception line, not the traceback)."""
        return first_error_line(self.error) if self.status == "ERROR" else None

    @property
    def stop_reason(self) -> str:
        if self.status == "ERROR":
            return f"ERROR: {self.error_line or 'unknown error'}"
        if self.status == "TERMINATED":
            if self.continued_by:
                return f"continued in {self.continued_by}"
            planned = self.epochs_planned
            if planned is not None and self.epochs_run < planned:
                return "early-stopped"
            return "completed"
        return self.status.lower()  # running / pending / paused: an interrupted search

    def trial_config(self) -> TrialConfig:
        if self.config is None:
            raise ExperimentError(f"trial {self.trial_id} of {self.experiment}: its config cannot be resolved")
        return TrialConfig.from_dict(self.config)


@dataclass
class Experiment:
    """An experiment folder, its options, its search space and its trials."""

    path: Path
    options: SearchOptions
    space: SearchSpace | None
    trials: list[TrialRecord]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def engine(self) -> str:
        return self.options.engine

    @property
    def searched(self) -> list[str]:
        """Names of the searched dimensions, in the order of the space file."""
        return [p.name for p in self.space.params] if self.space else []

    def trial(self, trial_id: str) -> TrialRecord:
        """A trial by id (or by its folder name); ExperimentError listing the ids otherwise."""
        for t in self.trials:
            if trial_id in (t.trial_id, t.folder.name if t.folder else None):
                return t
        matches = [t for t in self.trials if t.trial_id.startswith(trial_id)]
        if len(matches) == 1:
            return matches[0]
        ids = ", ".join(t.trial_id for t in self.trials) or "none"
        raise ExperimentError(f"experiment {self.name} has no trial '{trial_id}' (trials: {ids})")

    def best_trial(self) -> TrialRecord:
        """The trial with the highest best-epoch val_iou that still has that checkpoint."""
        ranked = sorted((t for t in self.trials if t.best is not None),
                        key=lambda t: float(t.best[METRIC]), reverse=True)
        for t in ranked:
            if t.best_checkpoint is not None:
                return t
        raise ExperimentError(f"experiment {self.name} has no trial with a checkpoint of its best epoch yet")

    @property
    def ensemble(self) -> dict | None:
        """The record of the last ensemble exported from this experiment, if any."""
        record = _read_json(self.path / ENSEMBLE_RECORD)
        return record if isinstance(record, dict) else None

    @property
    def optuna_db(self) -> Path | None:
        path = self.path / "optuna.db"
        return path if path.is_file() else None


# --------------------------------------------------------------------------- helpers
def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _epoch(row: dict) -> int:
    return int(row.get("epoch") or row.get("training_iteration") or 0)


def first_error_line(text: str | None) -> str | None:
    """The exception line of a traceback-like error text ("TrialDiverged: loss became nan ...")."""
    if not text:
        return None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # Ray: "Failure # 1 (occurred at ...)" + traceback; the last "Name: message" line is the cause.
    for line in reversed(lines):
        head, _, message = line.partition(":")
        if message and head and " " not in head and (head[0].isupper() or "." in head):
            if not line.startswith(("File ", "Traceback")):
                # "nuclei_search.errors.DataError: ..." -> "DataError: ..."
                return f"{head.rsplit('.', 1)[-1]}:{message}"
    return lines[-1] if lines else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _checkpoints(folder: Path | None) -> dict[int, Path]:
    """epoch -> checkpoint folder, from each checkpoint's train_state.json."""
    found: dict[int, Path] = {}
    if folder is None or not folder.is_dir():
        return found
    for state_file in sorted(folder.glob(f"checkpoint*/{STATE_FILE}")):
        state = _read_json(state_file)
        if isinstance(state, dict) and (state_file.parent / MODEL_FILE).is_file():
            epoch = int(state.get("epoch") or 0)
            # checkpoint_best and checkpoint_last may hold the same epoch: keep the best one's name
            if epoch not in found or state_file.parent.name == "checkpoint_best":
                found[epoch] = state_file.parent
    return found


def _resolve(space: SearchSpace | None, params: dict) -> dict | None:
    if space is None:
        return None
    try:
        return space.resolve(params).to_dict()
    except ConfigError as exc:
        log.info("cannot resolve %s: %s", params, exc)
        return None


def load_space(path: Path) -> SearchSpace | None:
    """The experiment's copy of its search space (None, with a warning, when unreadable)."""
    try:
        return SearchSpace.from_text((path / SPACE_FILE).read_text(), source=str(path / SPACE_FILE))
    except (OSError, ConfigError) as exc:
        log.warning("experiment %s: cannot read its search space (%s)", path, exc)
        return None


# --------------------------------------------------------------------------- engines
def _ray_trials(path: Path, space: SearchSpace | None) -> list[TrialRecord]:
    from ray.tune import ExperimentAnalysis

    if not list(path.glob(RAY_STATE_PATTERN)):
        return []  # created, never started
    try:
        with old_module_names():  # an experiment from before the packages moved under nuclei_search
            analysis = ExperimentAnalysis(str(path))
    except Exception as exc:  # a corrupt or foreign experiment state
        raise ExperimentError(f"cannot read the Ray Tune state of {path}: {exc}") from None
    searched = {p.name for p in space.params} if space else set()
    records = []
    for trial in analysis.trials:
        # Ray stores absolute paths; the experiment may have moved since: go by folder name.
        folder = path / Path(trial.path).name if trial.path else None
        if folder is not None and not folder.is_dir():
            folder = None
        config = dict(trial.config or {})
        if folder is not None and (folder / "params.json").is_file():
            config = _read_json(folder / "params.json") or config
        params = {k: v for k, v in config.items() if k in searched} if searched else dict(config)
        history = read_result_lines(folder / "result.json") if folder else []
        if not history and trial.last_result and METRIC in trial.last_result:
            history = [dict(trial.last_result)]
        error = None
        if trial.status == "ERROR":
            error_name = getattr(trial.run_metadata, "error_filename", None) or "error.txt"
            error_path = folder / error_name if folder else None
            if error_path is not None and error_path.is_file():
                error = error_path.read_text(errors="replace")
            else:
                error = "error file missing"
        records.append(TrialRecord(
            trial_id=str(trial.trial_id), experiment=path.name, engine="ray", status=str(trial.status),
            folder=folder, params=params, config=_resolve(space, config), history=history,
            checkpoints=_checkpoints(folder), error=error, num_failures=int(trial.num_failures or 0),
            refit_of=str(config[REFIT_OF]) if config.get(REFIT_OF) is not None else None,
        ))
    return records


def _kt_parents(path: Path) -> dict[str, str]:
    """parent trial id -> the Hyperband trial that continued it (from KerasTuner's own trial.json files)."""
    children: dict[str, str] = {}
    for trial_json in sorted(path.glob("keras_tuner/trial_*/trial.json")):
        doc = _read_json(trial_json) or {}
        values = (doc.get("hyperparameters") or {}).get("values") or {}
        parent = values.get("tuner/trial_id")
        if parent and doc.get("trial_id"):
            children.setdefault(str(parent), str(doc["trial_id"]))
    return children


def _kt_trials(path: Path, space: SearchSpace | None) -> list[TrialRecord]:
    children = _kt_parents(path)
    target = int(space.fixed["epochs"]) if space is not None and space.fixed.get("epochs") else None
    records = []
    for folder in sorted(path.glob(f"{KT_TRIAL_PREFIX}*")):
        if not folder.is_dir():
            continue
        trial_id = folder.name[len(KT_TRIAL_PREFIX):]
        raw = _read_json(folder / "params.json") or {}
        params = {k: v for k, v in raw.items() if k not in _NOT_PARAMS}
        config = raw.get("resolved") or _resolve(space, params)
        status_doc = _read_json(folder / KT_STATUS_FILE)
        status = str(status_doc.get("status")) if isinstance(status_doc, dict) else "RUNNING"
        error = status_doc.get("error") if isinstance(status_doc, dict) else None
        records.append(TrialRecord(
            trial_id=trial_id, experiment=path.name, engine="keras-tuner", status=status, folder=folder,
            params=params, config=config, history=read_result_lines(folder / "result.json"),
            checkpoints=_checkpoints(folder), error=error, num_failures=1 if status == "ERROR" else 0,
            target_epochs=target, continued_by=children.get(trial_id),
        ))
    return records


def is_train_folder(path: Path) -> bool:
    """A `nuclei-search train --out` folder (model card and history, no search)."""
    return ((path / CARD_FILE).is_file() and (path / TRAIN_HISTORY_FILE).is_file()
            and not (path / EXPERIMENT_FILE).is_file())


def load_train_folder(path: Path) -> Experiment:
    """A `train --out` folder as a one-trial experiment (engine "train"), for leaderboards and the dashboard."""
    import csv

    card = _read_json(path / CARD_FILE) or {}
    history, total = [], 0.0
    with open(path / TRAIN_HISTORY_FILE, newline="") as fh:
        for raw in csv.DictReader(fh):
            row = {k: float(v) for k, v in raw.items() if v not in ("", None)}
            row["epoch"] = int(row.get("epoch", len(history) + 1))
            total += row.get("epoch_seconds", 0.0) + row.get("validation_seconds", 0.0)
            row["time_total_s"] = total
            history.append(row)
    trial = TrialRecord(trial_id=path.name, experiment=path.name, engine="train", status="TERMINATED", folder=path,
                        params={}, config=card.get("config"), history=history)
    if (path / MODEL_FILE).is_file() and trial.best_epoch is not None:
        trial.checkpoints = {trial.best_epoch: path}  # `train` keeps the best epoch's model
    options = SearchOptions(name=path.name, space="", num_samples=1, engine="train")
    return Experiment(path=path.resolve(), options=options, space=None, trials=[trial])


def load_experiment(ref: str | Path, storage: str | None = None) -> Experiment:
    """The experiment named `ref` under `storage` (or the folder `ref`), with all its trials;
    a `train --out` folder reads as a one-trial experiment."""
    if is_train_folder(Path(ref).expanduser()):
        return load_train_folder(Path(ref).expanduser())
    path = find_experiment(str(ref), storage)
    options = load_options(path)
    space = load_space(path)
    if options.engine == "keras-tuner":
        trials = _kt_trials(path, space)
    else:
        trials = _ray_trials(path, space)
    log.info("experiment %s (%s): %d trials", path, options.engine, len(trials))
    return Experiment(path=path, options=options, space=space, trials=trials)
