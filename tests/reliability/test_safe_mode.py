"""Reliability matrix: a `.keras` file with a Lambda layer is refused under safe_mode.

A model folder that looks like an export (valid model card) but whose model.keras holds a
Python lambda, i.e. code that would run on load, or a Lambda wrapping a named function. `predict` and `evaluate` load exports
with `safe_mode=True`: exit code 2, one line naming the file and the Lambda, the lambda
never runs, and nothing is written. Control: the same file does run its code when loaded
with safe_mode off, so the refusal is what kept it from running.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from nuclei_search.config import TrialConfig
from search_helpers import assert_one_line_error, run_cli, snapshot

pytestmark = pytest.mark.slow  # trains, searches or starts Ray (README: the fast lane skips it)


def _double(x):
    return x * 2.0


@pytest.fixture
def lambda_export(tmp_path):
    """(model folder, marker file the lambda creates when it runs)."""
    marker = tmp_path / "lambda-ran"
    # the lambda's body touches the marker: built from source so its bytecode carries the path
    touch = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")  # noqa: S307 (test payload)
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(keras.layers.Lambda(touch)(inputs))
    folder = tmp_path / "export"
    folder.mkdir()
    keras.Model(inputs, outputs).save(folder / "model.keras")
    marker.unlink()  # building the model ran it once; start clean
    card = {"config": TrialConfig(decoder_depth=3).to_dict(), "input": {"stride_multiple": 8}}
    (folder / "model_card.json").write_text(json.dumps(card))
    keras.backend.clear_session()
    return folder, marker


def test_lambda_model_is_refused_by_predict_and_evaluate(capsys, tmp_path, lambda_export, synthetic_folder):
    folder, marker = lambda_export
    before = snapshot(folder)
    image = next(synthetic_folder.glob("*/images/*.png"))
    out = tmp_path / "pred"
    code, stdout, err = run_cli(capsys, "predict", folder, image, "--out", out, "--quiet")
    line = assert_one_line_error(code, err, f"cannot load {folder / 'model.keras'}", "Lambda")
    assert stdout == "" and not out.exists()
    code, stdout, err = run_cli(capsys, "evaluate", folder, "--data", synthetic_folder, "--quiet")
    assert assert_one_line_error(code, err) == line and stdout == ""
    assert not marker.exists(), "the Lambda's code ran"
    assert snapshot(folder) == before

    # a Lambda wrapping a named function: refused the same way (Keras raises TypeError, not ValueError)
    named = tmp_path / "named"
    named.mkdir()
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(keras.layers.Lambda(_double)(inputs))
    keras.Model(inputs, outputs).save(named / "model.keras")
    (named / "model_card.json").write_text((folder / "model_card.json").read_text())
    code, stdout, err = run_cli(capsys, "predict", named, image, "--out", out, "--quiet")
    assert_one_line_error(code, err, f"cannot load {named / 'model.keras'}", "unsafe layers")
    assert stdout == "" and not out.exists()

    # control: without safe_mode the same file runs its lambda on load
    model = keras.models.load_model(folder / "model.keras", safe_mode=False, compile=False)
    model(np.zeros((1, 8, 8, 3), "float32"))
    assert marker.exists()
    keras.backend.clear_session()
