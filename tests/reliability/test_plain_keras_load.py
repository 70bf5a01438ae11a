"""Reliability matrix: an export loads and predicts with Keras alone, as the user guide shows.

The guide's plain-Keras example is cut out of docs/guide.md and run in a fresh Python process
in which the project's packages cannot be imported; its mask must equal `predict --no-tta`'s.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from nuclei_search.results.predict import Predictor
from results_helpers import build_export

pytestmark = pytest.mark.slow  # trains, searches or starts Ray (README: the fast lane skips it)

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
PROJECT_PACKAGES = ("nuclei_search", "models", "data_pipeline", "results", "search", "cluster")  # and the old names


def readme_example() -> str:
    text = GUIDE.read_text()
    block = re.search(r"<!-- plain-keras-example -->\s*```python\n(.*?)```\s*<!-- /plain-keras-example -->", text, re.S)
    assert block, "docs/guide.md lost its plain-Keras example"
    return block.group(1)


@pytest.fixture(scope="module")
def model_dir(tiny_experiment, tmp_path_factory):
    return build_export(tmp_path_factory, tiny_experiment, saved_model=False)


def test_readme_example_predicts_like_predict_without_the_project(model_dir, tmp_path):
    rng = np.random.default_rng(5)
    image = rng.normal(30, 10, (45, 61, 3)).clip(0, 255).astype(np.uint8)
    cv2.circle(image, (20, 20), 8, (200, 180, 190), -1)
    assert cv2.imwrite(str(tmp_path / "cell.png"), image[..., ::-1])
    code = readme_example().replace('"best/', f'"{model_dir}/').replace('"cell.png"', f'"{tmp_path / "cell.png"}"')
    guard = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in PROJECT_PACKAGES)
    script = guard + code + f"\nnp.save({str(tmp_path / 'mask.npy')!r}, mask)\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    mask = np.load(tmp_path / "mask.npy")
    predictor = Predictor.load(model_dir)
    expected = predictor.predict(image, tta=False)[..., 0] > predictor.threshold
    assert mask.shape == (45, 61) and mask.dtype == bool
    np.testing.assert_array_equal(mask, expected)
