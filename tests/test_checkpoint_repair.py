"""Which checkpoint folder a repaired trial continues from (the newest complete one), and which
copy of a state file a kill cut short resume puts back."""

from __future__ import annotations

import json
import os
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


def test_a_cut_state_file_is_put_back_from_the_newest_whole_staging_copy(tmp_path, monkeypatch):
    """Ray writes its driver files into a staging folder per Ray session (whole, atomically) and
    copies them into the experiment folder; a kill during the copy cuts the file being copied.
    Resume puts back the newest whole staging copy; a later session's download of the cut file is
    not whole and is passed over."""
    import pickle

    from nuclei_search.search.state_recovery import is_whole, recover_cut_state

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "tmp"))  # Ray's own setting for its temp folder
    name = "exp-1"
    state_name, searcher_name = "experiment_state-2026-12-02_19-00-00.json", "searcher-state-2026-12-02_19-00-00.pkl"
    old_state, new_state = json.dumps({"trial_data": [], "n": 1}), json.dumps({"trial_data": [], "n": 2})
    searcher = pickle.dumps({"study": list(range(300))})

    def staging(session: str, files: dict, mtime: float):
        folder = tmp_path / "tmp" / "ray" / session / "artifacts" / "2026-12-02_19-00-00" / name / "driver_artifacts"
        folder.mkdir(parents=True)
        for file, data in files.items():
            (folder / file).write_bytes(data if isinstance(data, bytes) else data.encode())
            os.utime(folder / file, (mtime, mtime))

    staging("session_a", {state_name: old_state, searcher_name: searcher}, 100.0)  # the killed driver's, older
    staging("session_b", {state_name: new_state}, 200.0)  # ... newer
    staging("session_c", {state_name: new_state[:10]}, 300.0)  # a later resume downloaded the cut copy

    experiment = tmp_path / "storage" / name
    experiment.mkdir(parents=True)
    (experiment / state_name).write_text(new_state[:15])
    (experiment / searcher_name).write_bytes(searcher[: len(searcher) // 2])
    (experiment / "tuner.pkl").write_bytes(pickle.dumps({"whole": True}))
    (experiment / "ensemble.json").write_text("{")  # not Ray's: left alone
    (experiment / "search_gen_state-2026-12-02_19-00-00.json").write_bytes(pickle.dumps({"counter": 2}))  # Ray's
    assert not is_whole(experiment / state_name) and not is_whole(experiment / searcher_name)
    assert is_whole(experiment / "tuner.pkl") and is_whole(experiment / "search_gen_state-2026-12-02_19-00-00.json")

    lines = recover_cut_state(experiment)
    assert len(lines) == 2 and all("cut short" in line for line in lines), lines
    assert json.loads((experiment / state_name).read_text()) == {"trial_data": [], "n": 2}
    assert pickle.loads((experiment / searcher_name).read_bytes()) == {"study": list(range(300))}
    assert (experiment / f"{state_name}.cut").read_text() == new_state[:15]  # kept beside
    assert recover_cut_state(experiment) == []  # nothing left to do
    assert (experiment / "ensemble.json").read_text() == "{"

    # no whole copy anywhere: a one-line error naming the file, which is left as it was
    import pytest

    from nuclei_search.errors import ExperimentError
    from nuclei_search.search.checkpoint_repair import repair_missing_checkpoints

    other = tmp_path / "storage" / "exp-2"
    other.mkdir()
    (other / searcher_name).write_bytes(searcher[:40])
    with pytest.raises(ExperimentError, match=f"{searcher_name} is cut short .* no whole copy"):
        recover_cut_state(other)
    assert (other / searcher_name).read_bytes() == searcher[:40] and not list(other.glob("*.cut"))
    (other / state_name).write_text(new_state[:15])
    with pytest.raises(ExperimentError, match="no whole copy"):
        repair_missing_checkpoints(other)  # read directly, the state file is named the same way
