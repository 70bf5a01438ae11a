"""Leaderboards: one row per trial, hyperparameters beside the best validation metrics.

`leaderboard(ref)` reads one experiment (either engine), `compare(refs)` merges several
and marks each experiment's best; `sort_leaderboard` and `format_leaderboard` serve
the `leaderboard` and `compare` commands. A trial's score is its best epoch (by
val_iou): the epoch whose checkpoint export uses.

Columns: id, status, stage (explore | refit of <trial>), the hyperparameters (searched
ones, then resolved TrialConfig values that differ between trials), val_iou, val_dice,
val_map, the same by image type where known (val_iou_histology, val_map_histology, ...),
best_epoch, epochs_run, minutes, stop_reason (completed | early-stopped | ERROR: <reason> |
running/pending/paused for an interrupted search), checkpoint, engine, experiment.
`frame.attrs["hyperparameters"]` names the hyperparameter columns. `ensemble_frame`
sets the last ensemble exported from the experiment beside its best single trial.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from nuclei_search.data_pipeline.preprocess import IMAGE_TYPES
from nuclei_search.config import TrialConfig
from nuclei_search.errors import ConfigError
from nuclei_search.results.trials import Experiment, TrialRecord, load_experiment

METRICS = ("val_iou", "val_dice", "val_map")
#: validation scores by image type, shown where trials reported them
TYPE_COLUMNS = tuple(f"val_{m}_{t}" for t in IMAGE_TYPES for m in ("iou", "map"))
HEAD_COLUMNS = ("id", "status", "stage")
TAIL_COLUMNS = METRICS + ("best_epoch", "epochs_run", "minutes", "stop_reason", "checkpoint", "engine", "experiment")
# Sorted high-to-low; every other column low-to-high.
DESCENDING = set(METRICS) | set(TYPE_COLUMNS) | {"val_iou_per_image"}
FORMATS = ("table", "csv", "md", "json", "html")
VARIANT_PARAM = "efficientnet_variant"


def _trial_row(trial: TrialRecord, searched: Sequence[str]) -> dict:
    best = trial.best or {}
    row: dict = {"id": trial.trial_id, "status": trial.status,
                 "stage": f"refit of {trial.refit_of}" if trial.refit_of else "explore"}
    config = trial.config or {}
    for name in searched:
        # the resolved value where the search dimension is a config field (EfficientNet backbone
        # names resolve to e.g. efficientnetb1); the sampled value otherwise
        row[name] = config.get(name, trial.params.get(name)) if name != VARIANT_PARAM else trial.params.get(name)
    for name in TrialConfig.hyperparameter_names():
        if name not in row:
            row[name] = config.get(name, trial.params.get(name))
    for metric in METRICS + TYPE_COLUMNS:
        value = best.get(metric)
        row[metric] = float(value) if value is not None else math.nan
    row["best_epoch"] = trial.best_epoch
    row["epochs_run"] = trial.epochs_run
    row["minutes"] = round(trial.seconds / 60.0, 3)
    row["stop_reason"] = trial.stop_reason
    checkpoint = trial.best_checkpoint
    row["checkpoint"] = str(checkpoint) if checkpoint else None
    row["engine"] = trial.engine
    row["experiment"] = trial.experiment
    return row


def _varies(column: pd.Series) -> bool:
    values = {json.dumps(v, default=str) for v in column.tolist() if not _missing(v)}
    return len(values) > 1


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _frame(rows: list[dict], searched: Sequence[str]) -> pd.DataFrame:
    """Order columns; keep searched dimensions and the config fields that vary across rows."""
    config_fields = [n for n in TrialConfig.hyperparameter_names() if n not in searched]
    if not rows:
        columns = list(HEAD_COLUMNS) + list(searched) + list(TAIL_COLUMNS)
        frame = pd.DataFrame(columns=columns)
        frame.attrs["hyperparameters"] = list(searched)
        return frame
    frame = pd.DataFrame(rows)
    varying = [n for n in config_fields if n in frame and _varies(frame[n])]
    hyper = [n for n in searched if n in frame] + varying
    by_type = [c for c in TYPE_COLUMNS if c in frame and frame[c].notna().any()]
    tail = list(METRICS) + by_type + list(TAIL_COLUMNS[len(METRICS):])
    frame = frame[list(HEAD_COLUMNS) + hyper + tail].copy()
    for column in ("best_epoch", "epochs_run"):
        frame[column] = frame[column].astype("Int64")
    frame.attrs["hyperparameters"] = hyper
    return frame


def experiment_frame(experiment: Experiment) -> pd.DataFrame:
    """The leaderboard of an already loaded experiment, sorted by val_iou."""
    rows = [_trial_row(t, experiment.searched) for t in experiment.trials]
    return sort_leaderboard(_frame(rows, experiment.searched))


def ensemble_frame(experiment: Experiment) -> pd.DataFrame | None:
    """The last ensemble exported from the experiment beside the best single trial (None if none was):
    rows `ensemble`, `ensemble + postprocessing` and `best single trial`, with the validation
    scores overall and by image type."""
    record = experiment.ensemble
    if not record:
        return None
    single = record.get("best_single") or {}
    trial = next((t for t in experiment.trials if t.trial_id == single.get("trial_id")), None)
    members = ", ".join(f"{m['trial_id']}×{m['weight']}" for m in record.get("members", []))
    rows = [{"model": "ensemble", "members": members, **_scores(record.get("metrics") or {})}]
    if record.get("postprocess_metrics"):
        label = "ensemble + postprocessing" + (" + tta" if record.get("postprocess_tta") else "")
        rows.append({"model": label, "members": members,
                     **_scores(record["postprocess_metrics"])})
    if trial is not None and trial.best:
        rows.append({"model": "best single trial", "members": trial.trial_id, **_scores(trial.best)})
    frame = pd.DataFrame(rows)
    keep = [c for c in frame.columns if c in ("model", "members") or frame[c].notna().any()]
    return frame[keep]


def _scores(metrics: dict) -> dict:
    flat = {**metrics, **(metrics.get("by_type") or {})}
    return {k: float(flat[k]) if flat.get(k) is not None else math.nan for k in METRICS + TYPE_COLUMNS}


def leaderboard(ref: str | Path, storage: str | None = None) -> pd.DataFrame:
    """One row per trial of experiment `ref` (name under `storage`, or folder), best val_iou first."""
    return experiment_frame(load_experiment(ref, storage))


def compare(refs: Iterable[str | Path], storage: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(merged leaderboard with `is_best` marking each experiment's best trial, the best rows).

    Experiments may come from different engines and search different dimensions; the
    merged frame has the union of their hyperparameter columns (empty where a trial
    did not have one).
    """
    experiments = [load_experiment(ref, storage) for ref in refs]
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"the same experiment is given twice: {', '.join(names)}")
    searched: list[str] = []
    for e in experiments:
        searched.extend(n for n in e.searched if n not in searched)
    rows = [_trial_row(t, searched) for e in experiments for t in e.trials]
    merged = sort_leaderboard(_frame(rows, searched))
    merged["is_best"] = False
    for name in names:
        mine = merged[(merged["experiment"] == name) & merged["val_iou"].notna()]
        if len(mine):
            merged.loc[mine["val_iou"].idxmax(), "is_best"] = True
    best = merged[merged["is_best"]].copy()
    best = best.sort_values("val_iou", ascending=False, kind="stable")
    # experiments with no scored trial still get a line, so nothing silently disappears
    missing = [n for n in names if n not in set(best["experiment"])]
    if missing:
        filler = pd.DataFrame([{"experiment": n, "engine": e.engine, "stop_reason": "no scored trial"}
                               for n, e in zip(names, experiments) if n in missing])
        best = pd.concat([best, filler], ignore_index=True)
    best.attrs["hyperparameters"] = merged.attrs.get("hyperparameters", [])
    return merged, best.reset_index(drop=True)


def sort_leaderboard(frame: pd.DataFrame, by: str = "val_iou", top: int | None = None,
                     reverse: bool = False) -> pd.DataFrame:
    """Sort by a column (metrics high-to-low, others low-to-high; missing values last), keep `top` rows."""
    if by not in frame.columns:
        raise ConfigError(f"cannot sort by '{by}': no such column; columns are {', '.join(map(str, frame.columns))}")
    if top is not None and top < 1:
        raise ConfigError(f"--top must be >= 1 (got {top})")
    ascending = by not in DESCENDING
    if reverse:
        ascending = not ascending
    attrs = dict(frame.attrs)
    keys = [by] + (["val_iou"] if by != "val_iou" else [])
    orders = [ascending] + ([False] if by != "val_iou" else [])
    out = frame.sort_values(keys, ascending=orders, na_position="last", kind="stable")
    if top is not None:
        out = out.head(top)
    out = out.reset_index(drop=True)
    out.attrs.update(attrs)
    return out


# --------------------------------------------------------------------------- formats
def _plain(value):
    """A JSON/CSV friendly scalar (pandas NA and NaN become None)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def display_value(value, digits: int = 4) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub pipe table (no extra dependency)."""
    def cell(value) -> str:
        return display_value(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def format_leaderboard(frame: pd.DataFrame, fmt: str) -> str:
    """csv | md | json | html text of a leaderboard (the rich table is the CLI's)."""
    if fmt == "csv":
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        return buffer.getvalue()
    if fmt == "md":
        return markdown_table(frame)
    if fmt == "json":
        return json.dumps(records(frame), indent=2)
    if fmt == "html":
        return frame.to_html(index=False, na_rep="", float_format=lambda v: display_value(v), escape=True)
    raise ConfigError(f"unknown format '{fmt}': expected one of {', '.join(FORMATS)}")


def format_comparison(merged: pd.DataFrame, best: pd.DataFrame, fmt: str) -> str:
    """The compare output: the merged leaderboard (csv: with is_best) and each experiment's best."""
    if fmt == "csv":
        return format_leaderboard(merged, "csv")
    if fmt == "json":
        return json.dumps({"best": records(best), "trials": records(merged)}, indent=2)
    if fmt == "md":
        return "## Best of each experiment\n\n" + markdown_table(best) + "\n## All trials\n\n" + markdown_table(merged)
    if fmt == "html":
        return ("<h2>Best of each experiment</h2>\n" + format_leaderboard(best, "html")
                + "\n<h2>All trials</h2>\n" + format_leaderboard(merged, "html"))
    raise ConfigError(f"unknown format '{fmt}': expected one of {', '.join(FORMATS)}")
