"""`nuclei-search train` and models.train.train: one real trial, tiny sizes."""

from __future__ import annotations

import csv
import json

import cv2
import keras
import numpy as np
import pytest

from nuclei_search.models.train import TrainState, train
from nuclei_search.cli import main
from nuclei_search.config import TrialConfig

pytestmark = pytest.mark.slow  # trains, searches or starts Ray (README: the fast lane skips it)

TINY = dict(data="synthetic:12", image_size=32, batch_size=4, base_filters=4, backbone="none",
            decoder_depth=3, batch_norm=False, instance_method="cc", augment="flip")


def test_train_cli_writes_model_history_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--backbone", "mobilenetv2", "--decoder-depth", "4", "--epochs", "1",
                 "--image-size", "64", "--base-filters", "8", "--out", str(out), "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["val_iou"] <= 1.0 and 0.0 <= metrics["val_map"] <= 1.0
    assert metrics["epochs"] == 1 and metrics["config"]["backbone"] == "mobilenetv2"
    assert metrics["data_fingerprint"] and metrics["n_val"] >= 1
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == 1 and "val_iou" in rows[0] and "loss" in rows[0]
    model = keras.models.load_model(out / "model.keras", safe_mode=True, compile=False)
    assert model.output_shape[-1] == 1
    assert '"val_iou"' in capsys.readouterr().out
    # the folder has an export's model card: predict and evaluate --split val take it
    card = json.loads((out / "model_card.json").read_text())
    assert card["engine"] == "train" and card["config"]["backbone"] == "mobilenetv2"
    assert card["data"]["fingerprint"] == metrics["data_fingerprint"] and len(card["data"]["val_ids"]) == metrics["n_val"]
    assert card["input"]["stride_multiple"] == 16
    assert main(["evaluate", str(out), "--split", "val", "--quiet", "--format", "json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["images"] == metrics["n_val"] and scored["source"] == "synthetic"
    assert abs(scored["pooled"]["iou"] - metrics["val_iou"]) < 1e-3  # the same images, the same score
    # ... and leaderboard (and the dashboard) read it as a one-trial experiment
    assert main(["leaderboard", str(out), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == "run" and row["engine"] == "train" and row["val_iou"] == metrics["val_iou"]
    image = tmp_path / "cells.png"
    assert cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    assert main(["predict", str(out), str(image), "--out", str(tmp_path / "pred"), "--quiet"]) == 0
    mask = cv2.imread(str(tmp_path / "pred" / "cells_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (70, 90) and set(np.unique(mask)) <= {0, 255}
    capsys.readouterr()

    # an existing --out with content is refused without --overwrite, and left as it was
    before = (out / "metrics.json").read_text()
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == before


def test_bad_config_value_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", "--backbone", "vgg19", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "vgg19" in err and "\n" not in err
    config = tmp_path / "trial.yaml"
    config.write_text("backbone: none\nlearning_rat: 0.1\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "y")]) == 2
    assert "learning_rat" in capsys.readouterr().err


def test_same_seed_same_result_and_resume_continues(tmp_path):
    config = TrialConfig(**TINY, epochs=2, seed=7)
    first = train(config)
    second = train(config)
    assert [r["val_iou"] for r in first.history] == pytest.approx([r["val_iou"] for r in second.history], abs=1e-6)

    saved = {}

    def keep(epoch, row, model, state):
        if epoch == 1:
            state.save(tmp_path / "ckpt", model)
            saved["row"] = dict(row)

    train(config, keep)
    assert TrainState.load(tmp_path / "ckpt").epoch == 1
    resumed = train(config, resume_from=tmp_path / "ckpt")
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[0] == saved["row"]  # the first epoch comes from the checkpoint


def test_freeze_then_fine_tune_at_lower_rate():
    config = TrialConfig(**{**TINY, "backbone": "mobilenetv2"}, epochs=2, freeze_epochs=1,
                         learning_rate=1e-3, fine_tune_lr_factor=0.1, lr_schedule="constant")
    result = train(config)
    rates = [r["learning_rate"] for r in result.history]
    assert rates[0] == pytest.approx(1e-3) and rates[1] == pytest.approx(1e-4)
    assert result.model.get_layer("encoder").trainable


def test_consecutive_trials_in_one_process_release_their_graphs_and_variables():
    """KerasTuner runs trials in one process: a finished trial must leave no traced train
    step, no variable and no global custom gradient behind (benchmarks/worker_memory.py)."""
    import gc

    from tensorflow.python.eager import context
    from tensorflow.python.framework import ops

    def alive(kind: str) -> int:
        gc.collect()
        return sum(type(o).__name__ == kind for o in gc.get_objects())

    config = TrialConfig(**{**TINY, "backbone": "mobilenetv2"}, epochs=1)
    result = train(config, cpus=1)
    del result
    keras.backend.clear_session()
    baseline = (alive("FuncGraph"), alive("EagerTensor"), len(context.context().list_function_names()),
                len(ops._gradient_registry._registry))
    result = train(config.replace(seed=1), cpus=1)  # one more trial: a leak leaves more behind than the baseline
    del result
    keras.backend.clear_session()
    after = (alive("FuncGraph"), alive("EagerTensor"), len(context.context().list_function_names()),
             len(ops._gradient_registry._registry))
    assert after == baseline


def test_a_missing_data_source_fails_before_tensorflow_is_imported():
    """A trial with a bad data source ends in about a second, not after TensorFlow's import (~5 s):
    `train` reads its data first (a search's failing trials free their slot sooner)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from nuclei_search.config import TrialConfig\n"
            "from nuclei_search.errors import DataError\n"
            "from nuclei_search.models.train import train\n"
            "try:\n"
            "    train(TrialConfig(data='/nonexistent/dsb.zip', backbone='none'))\n"
            "except DataError as exc:\n"
            "    print(type(exc).__name__, 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["DataError", "False"], done.stdout + done.stderr
