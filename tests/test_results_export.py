"""Export of a tiny real experiment: reload with safe_mode, same val_iou, SavedModel, model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nuclei_search.cli import main
from nuclei_search.config import TrialConfig
from nuclei_search.results.leaderboard import leaderboard
from results_helpers import one_line_error

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tiny_experiment, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "best"
    assert main(["export", str(tiny_experiment), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def card(exported) -> dict:
    return json.loads((exported / "model_card.json").read_text())


def test_reloaded_export_reproduces_the_leaderboard_val_iou(exported, card, tiny_experiment):
    import keras

    import nuclei_search.models.layers  # noqa: F401  (registers the package's layers, as the card says)
    from nuclei_search.data_pipeline.loader import val_arrays
    from nuclei_search.models.evaluation import evaluate_model
    from nuclei_search.data_pipeline.loader import load_data
    from nuclei_search.models.unet import pad_multiple

    best = leaderboard(str(tiny_experiment)).iloc[0]
    assert card["trial_id"] == best["id"] and card["experiment"] == tiny_experiment.name

    model = keras.models.load_model(exported / "model.keras", safe_mode=True)
    assert getattr(model, "optimizer", None) is None  # saved without optimizer state
    config = TrialConfig.from_dict(card["config"])
    prepared, _, val_ids = load_data(config)
    assert val_ids == card["data"]["val_ids"] and prepared.fingerprint == card["data"]["fingerprint"]
    val = val_arrays(prepared, val_ids)
    result = evaluate_model(model, [i for i, _ in val], [lab for _, lab in val], multiple=pad_multiple(config),
                            threshold=config.threshold, instance_method=config.instance_method)
    assert abs(result.iou - best["val_iou"]) <= 1e-3, (result.iou, best["val_iou"])
    assert card["metrics"]["val_iou"] == pytest.approx(best["val_iou"])
    assert card["verification"]["ok"] and card["verification"]["abs_diff"] <= 1e-3


def test_saved_model_serves_the_same_probabilities(exported):
    import tensorflow as tf

    from nuclei_search.models.unet import load_unet

    rng = np.random.default_rng(0)
    x = rng.random((1, 40, 56, 3), dtype=np.float32)  # sides: multiples of the stride 8, not square
    served = tf.saved_model.load(str(exported / "saved_model"))
    y = np.asarray(served.serve(tf.constant(x)))
    expected = np.asarray(load_unet(exported / "model.keras", compile=False).predict_on_batch(x))
    assert y.shape == (1, 40, 56, 1)
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_model_card_documents_the_model(card, tiny_experiment):
    config = TrialConfig.from_dict(card["config"])  # the full config, valid
    assert set(card["config"]) == set(TrialConfig.field_names())
    assert card["config"]["cache_dir"] is None  # no local paths of the exporting machine
    assert card["engine"] == "ray" and card["experiment_path"] == str(tiny_experiment)
    data = card["data"]
    assert data["source"] == "synthetic:12" and len(data["fingerprint"]) == 16
    assert data["split_seed"] == config.split_seed and data["n_val"] == len(data["val_ids"]) >= 1
    assert data["n_train"] + data["n_val"] == 12
    spec = card["input"]
    assert spec["dtype"] == "float32" and spec["shape"] == [None, None, None, 3]
    assert spec["stride_multiple"] == 2 ** config.decoder_depth == 8
    assert "normalize_image" in spec["preprocessing"] and spec["normalisation"]["high_percentile"] == 99.8
    post = card["postprocess"]  # chosen on validation: the output contract follows it
    assert post["chosen_on"].startswith("validation") and card["output"]["threshold"] == post["threshold"]
    assert card["output"]["test_time_augmentation"][0] is post["tta"]
    assert card["output"]["instance_method"] == config.instance_method == "cc"
    assert {"tensorflow", "keras", "numpy", "ray", "optuna", "python"} <= set(card["versions"])
    assert card["metrics"]["best_epoch"] >= 1 and card["training"]["retrained_full"] is False


def test_bad_exports_are_refused_with_one_line(exported, tiny_experiment, capsys):
    before = sorted(p.name for p in exported.iterdir())
    assert main(["export", str(tiny_experiment), "--out", str(exported)]) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert sorted(p.name for p in exported.iterdir()) == before
    assert main(["export", str(tiny_experiment), "--trial", "nope", "--out", str(exported.parent / "x")]) == 2
    assert "has no trial 'nope'" in one_line_error(capsys)
    failed = leaderboard(str(tiny_experiment)).query("status == 'ERROR'").iloc[0]["id"]
    assert main(["export", str(tiny_experiment), "--trial", failed, "--out", str(exported.parent / "y")]) == 2
    assert "never reported val_iou" in one_line_error(capsys)


def test_retrain_full_on_a_chosen_trial(tiny_experiment, tmp_path, capsys):
    board = leaderboard(str(tiny_experiment))
    chosen = board[board["status"] == "TERMINATED"].iloc[-1]  # the weaker finished trial
    out = tmp_path / "full"
    out.mkdir()
    (out / "old.txt").write_text("an earlier file")
    assert main(["export", str(tiny_experiment), "--trial", chosen["id"], "--out", str(out), "--overwrite",
                 "--retrain-full", "--no-saved-model", "--quiet"]) == 0
    assert "retrained on train+val" in capsys.readouterr().out
    card = json.loads((out / "model_card.json").read_text())
    assert card["trial_id"] == chosen["id"] and card["selected_by"] == "--trial"
    training = card["training"]
    assert training["retrained_full"] is True and training["epochs"] == chosen["best_epoch"]
    assert training["images"] == 12 and np.isfinite(training["final_loss"])
    assert card["verification"] is None  # nothing held out is left to verify on
    assert not (out / "saved_model").exists() and (out / "old.txt").is_file()

    from nuclei_search.results.export import load_exported_model

    model = load_exported_model(out)
    assert model.predict_on_batch(np.zeros((1, 24, 32, 3), np.float32)).shape == (1, 24, 32, 1)
