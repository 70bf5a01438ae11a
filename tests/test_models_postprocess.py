"""Instance post-processing: watershed separates touching nuclei, cc does not."""

from __future__ import annotations

import time

import numpy as np
import pytest
from skimage.morphology import h_maxima

from nuclei_search.models.metrics import kaggle_ap
from nuclei_search.models.postprocess import h_maxima_mask, instances_from_prediction
from nuclei_search.errors import ConfigError


def _two_touching_discs(shape=(80, 120), r=20, gap=36):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    a = (yy - 40) ** 2 + (xx - 40) ** 2 < r**2
    b = (yy - 40) ** 2 + (xx - 40 - gap) ** 2 < r**2
    truth = np.where(a, 1, np.where(b, 2, 0))
    return truth, (a | b).astype("float32") * 0.9


def test_watershed_separates_touching_discs_cc_merges_them():
    truth, prob = _two_touching_discs()
    cc = instances_from_prediction(prob, method="cc")
    ws = instances_from_prediction(prob, method="watershed")
    assert cc.dtype == np.uint16 and ws.dtype == np.uint16
    assert cc.max() == 1
    assert ws.max() == 2
    assert np.array_equal(ws > 0, prob > 0.5)  # no foreground lost
    assert kaggle_ap(truth, ws) > 0.9 > kaggle_ap(truth, cc)


def test_boundary_channel_markers():
    truth, prob = _two_touching_discs()
    boundary = np.zeros_like(prob)
    boundary[:, 56:60] = 0.9  # a predicted contour across the neck
    ws = instances_from_prediction(prob, boundary=boundary, method="watershed", h=100.0)
    assert ws.max() == 2
    stacked = instances_from_prediction(np.stack([prob, boundary], -1), method="watershed", h=100.0)
    assert np.array_equal(stacked, ws)


def test_min_size_threshold_and_empty():
    prob = np.zeros((30, 30), "float32")
    prob[2:4, 2:4] = 0.9  # 4 px
    prob[10:20, 10:20] = 0.6  # 100 px
    labels = instances_from_prediction(prob, min_size=10)
    assert labels.max() == 1 and labels[15, 15] == 1 and labels[3, 3] == 0
    assert instances_from_prediction(prob, threshold=0.7, min_size=1).max() == 1  # only the small one
    assert instances_from_prediction(np.zeros((5, 5)), method="cc").max() == 0


def test_h_maxima_matches_skimage():
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(rng.random((64, 64)), 2).astype("float32") * 50
    assert np.array_equal(h_maxima_mask(img, 2.0), h_maxima(img, 2.0) > 0)


def test_fast_on_full_size_image():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:1040, :1388]
    prob = np.zeros((1040, 1388), "float32")
    for cy, cx, r in zip(rng.integers(20, 1020, 150), rng.integers(20, 1368, 150), rng.integers(6, 15, 150)):
        y0, x0 = cy - r, cx - r
        sub = (yy[y0 : cy + r, x0 : cx + r] - cy) ** 2 + (xx[y0 : cy + r, x0 : cx + r] - cx) ** 2 < r * r
        prob[y0 : cy + r, x0 : cx + r][sub] = 0.9
    start = time.monotonic()
    labels = instances_from_prediction(prob, method="watershed")
    assert time.monotonic() - start < 3.0
    assert labels.max() >= 100


def test_unknown_method():
    with pytest.raises(ConfigError, match="instance method"):
        instances_from_prediction(np.zeros((4, 4)), method="stardist")
