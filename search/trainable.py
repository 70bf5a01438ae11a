"""The Ray Tune trainable: a plain function that trains one config and reports every validated epoch.

It calls the same `models.train.train` as `nuclei-search train`. Each validated epoch (the
config's `validation_epochs` and the scheduler's rungs) it reports
`val_iou` (plus losses, `val_dice`, `val_map`) and `val_iou_best`, the best `val_iou` of
the trial so far, with a checkpoint holding the model and the training state, so ASHA can
stop it, the best checkpoint can be found later, and a restored search continues the
trial from its last epoch instead of starting over.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from ray import tune

from nuclei_search.contract import CHECKPOINT_MANIFEST, RANK_METRIC, STATE_FILE
from nuclei_search.quiet import quiet_tensorflow_import
from nuclei_search.search.space import REFIT_OF, SearchSpace

log = logging.getLogger(__name__)

STARTS_FILE = "trial_starts.jsonl"  # one line per (re)start of the trial's training
#: How long Ray waits for a stopped trial's thread to end before it reuses this worker for the
#: next trial (`reuse_actors`). As the thread ends it frees the trial's model, traced graphs
#: and tf.data pipeline (prefetch threads), which can take more than Ray's default 2 s on a
#: loaded 2-core machine; the reset would then fail and Ray would error the next trial. Ray
#: reads the variable in the worker at each reset, so a trial sets it for the ones after it.
THREAD_TIMEOUT_S = "60"
STAGING_PREFIX = "nuclei-ckpt-"  # + "<pid>-": checkpoint staging folders in the temp dir


def _remove_stale_staging() -> None:
    """Delete checkpoint staging folders left by trial processes that were killed mid-report
    (ASHA stopping a trial, a lost node, kill -9): their owner pid no longer exists."""
    for folder in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*-*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def _record_start(record: dict) -> None:
    """Add one line to `trial_starts.jsonl` in the trial's folder on the experiment storage.

    Not `tune.get_context().get_trial_dir()`: that is a staging folder on the driver's
    machine, missing on every other node of a cluster. The storage (shared folder, s3://,
    gs://...) is written through Ray's own pyarrow filesystem. Object stores cannot
    append, so the file is read and written back whole; one process at a time runs a
    trial, so there is one writer.
    """
    storage = tune.get_context().get_storage()
    fs, folder = storage.storage_filesystem, storage.trial_fs_path
    path = f"{folder}/{STARTS_FILE}"
    fs.create_dir(folder, recursive=True)
    try:
        with fs.open_input_stream(path) as fh:
            lines = fh.read()
    except FileNotFoundError:
        lines = b""
    with fs.open_output_stream(path) as fh:
        fh.write(lines + (json.dumps(record) + "\n").encode())


def _write_manifest(folder: Path) -> None:
    """List the checkpoint's files with their sizes, so a copy cut short by a kill is told from a
    complete one whatever the trainable saves (search.checkpoint_repair)."""
    sizes = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / CHECKPOINT_MANIFEST).write_text(json.dumps(sizes))


def _trial_cpus() -> int | None:
    import ray

    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # not inside Ray
        return None
    return max(1, int(cpus)) if cpus else None


def run_trial(fit: Callable[[str | None, Callable], None], **reported) -> None:
    """What every trial does around its training, whatever it trains.

    Records where it runs (`trial_starts.jsonl`), continues from Ray's checkpoint when there
    is one, and hands `fit(resume_from, report)` the checkpoint folder (None for a fresh
    start) and a `report(row, best, save)` to call once per epoch: `row` the epoch's
    metrics, `best` the trial's best `val_iou` so far (what the scheduler and searcher
    rank), `save(folder)` writes the checkpoint (`train_state.json` and whatever the
    training needs). `reported` is added to every report.
    """
    import ray

    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", THREAD_TIMEOUT_S)
    _remove_stale_staging()
    node_id = ray.get_runtime_context().get_node_id()
    placement = {
        "node_id": node_id,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "pid": os.getpid(),
    }

    def report(row: dict, best: float, save: Callable[[str], None]) -> None:
        metrics = {**row, RANK_METRIC: float(best), "node_id": node_id,
                   "cuda_visible_devices": placement["cuda_visible_devices"], **reported}
        with tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-") as folder:
            save(folder)
            _write_manifest(Path(folder))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    def start(resume_from: str | None) -> None:
        epoch = json.loads((Path(resume_from) / STATE_FILE).read_text())["epoch"] if resume_from else None
        _record_start({"time": time.time(), "resumed_from_epoch": epoch, **placement})
        fit(resume_from, report)

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start(folder)
    else:
        start(None)


def train_unet(config: dict, space_source: str | None = None, space_text: str | None = None,
               milestones: tuple[int, ...] = ()) -> None:
    """Ray Tune function trainable. `config` holds the sampled values plus the fixed ones.
    `milestones`: the epochs the search's scheduler reads (ASHA's rungs), always validated in
    exploration trials (refit trials are not scheduled)."""
    quiet_tensorflow_import()  # its start-up lines stay out of the trial's log (TF_CPP_MIN_LOG_LEVEL=3)
    from nuclei_search.models.train import train

    trial_config = SearchSpace.from_text(space_text, source=space_source or "<space>").resolve(config)
    if config.get(REFIT_OF) is not None:
        milestones = ()

    def fit(resume_from: str | None, report: Callable) -> None:
        def report_epoch(epoch: int, row: dict, model, state) -> None:
            report(row, state.best["val_iou"], lambda folder: state.save(folder, model))

        train(trial_config, report_epoch, cpus=_trial_cpus(), resume_from=resume_from,
              validation_milestones=milestones)

    run_trial(fit, backbone_resolved=trial_config.backbone)
