"""Point trials whose recorded checkpoint is gone at the newest one that survived.

Ray Tune deletes a superseded checkpoint (`CheckpointConfig.num_to_keep`) as soon as it
registers the next one, and writes the experiment state (`experiment_state-*.json`) a
moment later, at the end of the same controller step. A driver killed in between leaves
a state that names a deleted checkpoint, and `Tuner.restore` then fails that trial with
"Could not recover from checkpoint as it does not exist on storage anymore" on every
retry. The trial's folder still holds the newer checkpoint (the worker wrote it before the
driver registered it), so the state is repaired from it before Ray reads it: the trial
continues from there or, if it was its last epoch, finishes with that epoch's metrics.

What a checkpoint holds is this project's own format (`train_state.json`: the epochs done
and the metric rows, the last one being the row reported with it, beside what the trainable
saves, e.g. the model, and a manifest of its files with their sizes, search.trainable); the
trainable reports a checkpoint with every result, so checkpoint_<N> is Ray's iteration
N + 1. Ray's own result rows cannot be used: Ray writes them to a driver staging folder
and copies them beside the checkpoints only with the experiment state.

Local experiment folders only; the original state file is kept beside as `*.json.bak`.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

from nuclei_search.contract import (CHECKPOINT_MANIFEST, METRIC, MODEL_FILE, RANK_METRIC, RAY_STATE_PATTERN, RESULT_FILE,
                                    STATE_FILE, read_result_lines)
from nuclei_search.internals import replace_latest_checkpoint, saved_trial_state, saved_trials, training_result
from nuclei_search.search.state_recovery import cut_short

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint_"


def newest_state(experiment: Path) -> tuple[Path, dict] | None:
    """The state file `Tuner.restore` reads (Ray takes the largest name, a timestamp) and its content."""
    files = sorted(experiment.glob(RAY_STATE_PATTERN))
    if not files:
        return None
    try:
        return files[-1], json.loads(files[-1].read_text())
    except ValueError:
        raise cut_short(files[-1]) from None


def _checkpoint_index(folder: Path) -> int | None:
    suffix = folder.name[len(CHECKPOINT_PREFIX):]
    return int(suffix) if folder.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() else None


def _files_complete(folder: Path) -> bool:
    """Every file the checkpoint's manifest lists is there at its size; a checkpoint written
    before manifests existed must hold an intact model archive."""
    manifest = folder / CHECKPOINT_MANIFEST
    if manifest.is_file():
        sizes = json.loads(manifest.read_text())
        return all((folder / name).is_file() and (folder / name).stat().st_size == size
                   for name, size in sizes.items())
    with zipfile.ZipFile(folder / MODEL_FILE) as archive:
        return archive.testzip() is None


def complete_checkpoint(folder: Path) -> dict | None:
    """The reported metric row of a checkpoint folder (with the trial's best val_iou so far,
    as the trainable reports it), or None if it is incomplete
    (a copy cut short by the kill: a missing or truncated file, an unreadable state)."""
    try:
        if not _files_complete(folder):
            return None
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    history = state.get("history") or []
    if not history:
        return None

    best = (state.get("best") or {}).get("val_iou")
    return {**history[-1], **({RANK_METRIC: float(best)} if best is not None else {})}


def surviving_checkpoint(trial_dir: Path, after: int) -> tuple[Path, int, dict] | None:
    """The newest complete checkpoint of a trial numbered above `after`: (folder, index, row)."""
    found = [(index, p) for p in trial_dir.glob(f"{CHECKPOINT_PREFIX}*")
             if p.is_dir() and (index := _checkpoint_index(p)) is not None and index > after]
    for index, folder in sorted(found, reverse=True):
        row = complete_checkpoint(folder)
        if row is not None:
            return folder, index, row
    return None


def _in_experiment(experiment: Path, checkpoint_path: str) -> Path:
    recorded = Path(checkpoint_path)
    return experiment / recorded.parent.name / recorded.name  # the experiment folder may have moved


def recorded_checkpoints(experiment: Path) -> dict[str, Path]:
    """Trial folder name -> the latest checkpoint the newest saved state names."""
    newest = newest_state(experiment)
    found = {}
    for _, _, latest in saved_trials(newest[1]) if newest else ():
        path = _in_experiment(experiment, latest.checkpoint.path)
        found[path.parent.name] = path
    return found


def _log_lost_results(trial_dir: Path, metrics: dict, survivor: Path) -> None:
    """Append the rows Ray's copy of result.json lacks, up to the survivor's (the leaderboard
    reads the rows; the resumed trial will not report those epochs again). Ray copies the rows
    with the state, so every report since the last copy is missing; the survivor's training
    state holds their metrics. If the count does not match (an epoch was trained twice), only
    the survivor's row is added."""
    path = trial_dir / RESULT_FILE
    rows = read_result_lines(path)
    last = rows[-1].get("training_iteration", 0) if rows else 0
    if last >= metrics["training_iteration"]:
        return
    history = json.loads((survivor / STATE_FILE).read_text())["history"]
    last_epoch = rows[-1].get("epoch", 0) if rows else 0
    lost = [(n, row) for n, row in enumerate(history) if row.get("epoch", 0) > last_epoch]
    if len(lost) != metrics["training_iteration"] - last:
        lost = lost[-1:]
    records = []
    for offset, (n, row) in enumerate(lost, start=1):
        best = max(r.get(METRIC, float("-inf")) for r in history[: n + 1])
        iteration = metrics["training_iteration"] - len(lost) + offset
        records.append({**metrics, **row, RANK_METRIC: best, "training_iteration": iteration,
                        "checkpoint_dir_name": f"{CHECKPOINT_PREFIX}{iteration - 1:06d}"})
    records[-1:] = [metrics]  # the survivor's own row, as registered
    text = path.read_text() if path.is_file() else ""
    separator = "" if not text or text.endswith("\n") else "\n"  # a line cut by the kill stays apart
    with path.open("a") as handle:
        handle.write(separator + "".join(json.dumps(r, default=str) + "\n" for r in records))


def repair_missing_checkpoints(experiment: Path) -> list[str]:
    """Repair the newest experiment state in place; returns one line per repaired trial."""
    newest = newest_state(experiment)
    if newest is None:
        return []
    state_file, state = newest
    repaired: list[str] = []
    for position, trial, latest in list(saved_trials(state)):
        recorded = _in_experiment(experiment, latest.checkpoint.path)
        trial_dir = recorded.parent
        if recorded.is_dir() or _checkpoint_index(recorded) is None:
            continue
        found = surviving_checkpoint(trial_dir, after=_checkpoint_index(recorded))
        if found is None:
            log.warning("%s: checkpoint %s is gone and no later one survived", trial_dir.name, recorded.name)
            continue
        folder, index, row = found
        metrics = {**latest.metrics, **row, "training_iteration": index + 1, "checkpoint_dir_name": folder.name}
        # forget every record whose folder is gone, then register the survivor as the latest
        replace_latest_checkpoint(trial, training_result(folder, latest.checkpoint.filesystem, metrics), index)
        _log_lost_results(trial_dir, metrics, folder)
        state["trial_data"][position] = saved_trial_state(trial)
        repaired.append(f"{trial_dir.name}: {recorded.name} was deleted before Ray saved its state; "
                        f"continuing from {folder.name} (epoch {row.get('epoch', '?')})")
    if repaired:
        backup = state_file.with_name(state_file.name + ".bak")
        if not backup.exists():
            backup.write_bytes(state_file.read_bytes())
        staging = state_file.with_name(state_file.name + ".tmp")
        staging.write_text(json.dumps(state, indent=2))
        os.replace(staging, state_file)
        for line in repaired:
            log.warning(line)
    return repaired
