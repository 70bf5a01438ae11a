"""Reliability matrix: `predict` never leaves half an output, and never replaces a submission unasked.

`predict` writes its masks into a fresh folder beside `--out` and moves them in at the end
(the `--rle` CSV likewise), so a run that fails on its second image leaves `--out` and the
CSV as they were: absent, or an earlier run's files byte for byte. An existing `--rle` file
is refused without `--overwrite`, like `--out`. The export is the session's tiny real one.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from nuclei_search.cli import main
from results_helpers import build_export, one_line_error

pytestmark = pytest.mark.slow  # trains, searches or starts Ray (README: the fast lane skips it)


@pytest.fixture(scope="module")
def model_dir(tiny_experiment, tmp_path_factory):
    return build_export(tmp_path_factory, tiny_experiment, saved_model=False)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict-inputs")
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(folder / "tiny-37x53.png"), rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    return folder


def test_predict_never_leaves_half_an_output_or_replaces_a_submission_unasked(model_dir, image_dir, tmp_path, capsys):
    good = str(image_dir / "tiny-37x53.png")
    corrupt = tmp_path / "zz-corrupt.png"  # predicted after the good image
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out, csv_path = tmp_path / "out", tmp_path / "submission.csv"

    # fails on the second image: no --out, no CSV, no staging folder left behind
    assert main(["predict", str(model_dir), good, str(corrupt), "--out", str(out), "--rle", str(csv_path),
                 "--quiet"]) == 2
    assert "zz-corrupt.png" in one_line_error(capsys)
    assert not out.exists() and not csv_path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zz-corrupt.png"]

    # an earlier run's files stay as they were when a rerun with --overwrite fails half way
    assert main(["predict", str(model_dir), good, "--out", str(out), "--rle", str(csv_path), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    csv_before = csv_path.read_bytes()
    assert main(["predict", str(model_dir), good, str(corrupt), "--out", str(out), "--rle", str(csv_path),
                 "--overwrite", "--quiet"]) == 2
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and csv_path.read_bytes() == csv_before

    # an existing submission is refused without --overwrite (into a new --out), and replaced with it
    csv_path.write_text("mine\n")
    assert main(["predict", str(model_dir), good, "--out", str(tmp_path / "new"), "--rle", str(csv_path)]) == 2
    assert "--overwrite" in one_line_error(capsys) and csv_path.read_text() == "mine\n"
    assert not (tmp_path / "new").exists()
    assert main(["predict", str(model_dir), good, "--out", str(tmp_path / "new"), "--rle", str(csv_path),
                 "--overwrite", "--quiet"]) == 0
    assert csv_path.read_text().startswith("ImageId,EncodedPixels")
    assert oct((tmp_path / "new").stat().st_mode & 0o777) != oct(0o700)


def test_predict_in_a_fresh_process_writes_nothing_to_stderr(model_dir, image_dir, tmp_path):
    """TensorFlow 2.19+ prints its start-up lines (absl, oneDNN, cuInit) whatever
    TF_CPP_MIN_LOG_LEVEL says; the CLI keeps them off stderr (nuclei_search/quiet.py).
    `train` is checked the same way by the one-line errors of test_storage_readonly_full.py."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "nuclei_search", "predict", str(model_dir),
                           str(image_dir / "tiny-37x53.png"), "--out", str(tmp_path / "p"), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
