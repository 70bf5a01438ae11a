"""Which checkpoint folder a repaired trial continues from: the newest complete one."""

from __future__ import annotations

import json
import zipfile

from nuclei_search.contract import MODEL_FILE, STATE_FILE
from nuclei_search.search.checkpoint_repair import complete_checkpoint, surviving_checkpoint


def _checkpoint(folder, epoch, truncate=False):
    folder.mkdir(parents=True)
    history = [{"epoch": e, "val_iou": (e % 3 + 1) / 10} for e in range(1, epoch + 1)]  # 0.2, 0.3, 0.1, ...
    best = max(history, key=lambda row: row["val_iou"])
    (folder / STATE_FILE).write_text(json.dumps({"epoch": epoch, "history": history, "best": best}))
    with zipfile.ZipFile(folder / MODEL_FILE, "w") as archive:
        archive.writestr("config.json", json.dumps({"epoch": epoch}) * 200)
        archive.writestr("model.weights.h5", bytes(range(256)) * 64)
    if truncate:  # a copy cut short by a kill: the zip's central directory is missing
        data = (folder / MODEL_FILE).read_bytes()
        (folder / MODEL_FILE).write_bytes(data[: len(data) // 2])


def test_newest_complete_checkpoint_after_the_recorded_one(tmp_path):
    trial = tmp_path / "trial_x"
    _checkpoint(trial / "checkpoint_000000", 1)
    _checkpoint(trial / "checkpoint_000002", 3)
    _checkpoint(trial / "checkpoint_000003", 4, truncate=True)
    (trial / "checkpoint_000004").mkdir()  # the copy had only started

    assert complete_checkpoint(trial / "checkpoint_000003") is None
    assert complete_checkpoint(trial / "checkpoint_000004") is None
    folder, index, row = surviving_checkpoint(trial, after=1)
    # the row the trainable reported with it: the epoch's metrics and the trial's best so far
    assert (folder.name, index, row) == ("checkpoint_000002", 2, {"epoch": 3, "val_iou": 0.1, "val_iou_best": 0.3})
    # only checkpoints newer than the one the state named count
    assert surviving_checkpoint(trial, after=2) is None


def test_a_manifest_tells_a_complete_checkpoint_of_any_trainable(tmp_path):
    """With the manifest the trial harness writes, completeness does not depend on what the
    trainable saves (the tiny trainable saves no model): every listed file at its size."""
    from nuclei_search.contract import CHECKPOINT_MANIFEST
    from nuclei_search.search.trainable import _write_manifest

    trial = tmp_path / "trial_y"
    for index, epoch in ((0, 1), (1, 2), (2, 3)):
        folder = trial / f"checkpoint_{index:06d}"
        folder.mkdir(parents=True)
        history = [{"epoch": e, "val_iou": e / 10} for e in range(1, epoch + 1)]
        (folder / STATE_FILE).write_text(json.dumps({"epoch": epoch, "history": history, "best": history[-1]}))
        (folder / "weights.bin").write_bytes(bytes(1000))
        _write_manifest(folder)
    (trial / "checkpoint_000002" / "weights.bin").write_bytes(bytes(10))  # cut short
    (trial / "checkpoint_000001" / STATE_FILE).unlink()  # never copied

    assert complete_checkpoint(trial / "checkpoint_000000") == {"epoch": 1, "val_iou": 0.1, "val_iou_best": 0.1}
    assert complete_checkpoint(trial / "checkpoint_000001") is None
    assert complete_checkpoint(trial / "checkpoint_000002") is None
    assert surviving_checkpoint(trial, after=-1)[0].name == "checkpoint_000000"
    # without its manifest a checkpoint needs the model archive (checkpoints of earlier releases)
    (trial / "checkpoint_000000" / CHECKPOINT_MANIFEST).unlink()
    assert complete_checkpoint(trial / "checkpoint_000000") is None


def test_a_state_file_cut_by_the_kill_is_a_one_line_error(tmp_path):
    import pytest

    from nuclei_search.errors import ExperimentError
    from nuclei_search.search.checkpoint_repair import repair_missing_checkpoints

    (tmp_path / "experiment_state-2026-12-02_19-00-00.json").write_text('{"trial_data": [["a", ')
    with pytest.raises(ExperimentError, match="cut short"):
        repair_missing_checkpoints(tmp_path)
