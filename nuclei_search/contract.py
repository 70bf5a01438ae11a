"""The on-disk contract of experiments and exports, and the metric names: defined once here.

The search engines write these files, checkpoint repair and the results commands read
them, benchmarks and tests look at them; every module takes the names from here (as
nnU-Net keeps its layout in one `paths.py`). A leaf module: it imports nothing of the
project and nothing heavy.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# --- metrics --------------------------------------------------------------------------
METRIC = "val_iou"  # whole-image validation foreground IoU of an epoch
MODE = "max"
#: what schedulers and searchers rank trials by: the trial's best METRIC so far (monotone)
RANK_METRIC = "val_iou_best"
#: the schedulers' clock: the trained epoch a report is about (not Ray's training_iteration)
TIME_ATTR = "epoch"

# --- an experiment folder: <storage>/<name>/ ---------------------------------------------
EXPERIMENT_FILE = "nuclei_search.json"  # the search options (resume needs only the name)
SPACE_FILE = "space.yaml"  # the effective search space, as started
STUDY_FILE = "optuna.db"  # the Optuna study
ENSEMBLE_RECORD = "ensemble.json"  # the last ensemble exported from the experiment
RAY_STATE_PATTERN = "experiment_state-*.json"  # Ray Tune's experiment state
KT_DIR = "keras_tuner"  # KerasTuner's own oracle state
KT_TRIAL_PREFIX = "kt_trial_"  # a KerasTuner trial's folder (Ray's are trial_<id>)
KT_STATUS_FILE = "trial_status.json"  # a KerasTuner trial's status and error

# --- a trial folder and its checkpoints ---------------------------------------------------
RESULT_FILE = "result.json"  # one JSON line per reported epoch
MODEL_FILE = "model.keras"  # in each checkpoint, and in an export or `train --out` folder
STATE_FILE = "train_state.json"  # the training state beside a checkpoint's model
CHECKPOINT_MANIFEST = "checkpoint_files.json"  # the files of a checkpoint and their sizes
BEST_CHECKPOINT = "checkpoint_best"  # KerasTuner trials keep their best and last epochs
LAST_CHECKPOINT = "checkpoint_last"

# --- an export (or `train --out`) folder --------------------------------------------------
CARD_FILE = "model_card.json"
SAVED_MODEL_DIR = "saved_model"
TRAIN_HISTORY_FILE = "history.csv"  # `train --out`: one row per epoch
TRAIN_METRICS_FILE = "metrics.json"  # `train --out`: the best epoch's scores


def read_result_lines(path: Path) -> list[dict]:
    """The JSON lines of a trial's result.json (a half-written last line is ignored)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                log.debug("skipping an unreadable line of %s", path)
    return rows
