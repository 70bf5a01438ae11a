"""Tiled prediction streams one row of tiles at a time and gives what blending the whole padded
image at once gives; a uint8 image normalised tile by tile gives what normalising it first gives."""

from __future__ import annotations

import numpy as np
import pytest

from nuclei_search.data_pipeline.augment import normalize_image, percentile_bounds, stretch
from nuclei_search.models.inference import GraphPredictor, _pad_to_multiple, _ramp, default_overlap, predict_tiled, tile_layout
from nuclei_search.models.unet import build_unet
from nuclei_search.config import TrialConfig


@pytest.fixture(scope="module")
def predictor():
    config = TrialConfig(image_size=32, base_filters=4, backbone="none", decoder_depth=3, boundary_channel=True)
    return GraphPredictor(build_unet(config), freeze=False)


def _blended_at_once(model, image, tile, multiple, overlap):
    """The reference: pad the whole image, add every tile's windowed prediction and window, divide."""
    padded, (h, w) = _pad_to_multiple(image, multiple)
    H, W = padded.shape[:2]
    tile_h, rows = tile_layout(H, tile, overlap, multiple)
    tile_w, cols = tile_layout(W, tile, overlap, multiple)
    window = np.outer(_ramp(tile_h, overlap), _ramp(tile_w, overlap))[..., None]
    acc, weight = np.zeros((H, W, 2), np.float64), np.zeros((H, W, 1), np.float64)
    for y in rows:
        for x in cols:
            p = model.predict_on_batch(padded[None, y : y + tile_h, x : x + tile_w])[0]
            acc[y : y + tile_h, x : x + tile_w] += p * window
            weight[y : y + tile_h, x : x + tile_w] += window
    return (acc / weight)[:h, :w]


@pytest.mark.parametrize("shape, tile, overlap", [((100, 147), 32, None), ((70, 200), 48, 0), ((12, 90), 32, 8)])
def test_streamed_tiles_equal_blending_the_whole_padded_image(predictor, shape, tile, overlap):
    image = np.random.default_rng(0).random((*shape, 3), dtype=np.float32)
    multiple = 8
    overlap_used = default_overlap(multiple) if overlap is None else overlap
    got = predict_tiled(predictor, image, tile=tile, multiple=multiple, overlap=overlap, batch_size=3)
    assert got.shape == (*shape, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, _blended_at_once(predictor, image, tile, multiple, overlap_used), atol=2e-6)


def test_uint8_tiles_normalised_one_by_one_equal_the_normalised_image_and_float16_halves_it(predictor):
    image = np.random.default_rng(1).integers(0, 200, (90, 130, 3), dtype=np.uint8)
    low, high = percentile_bounds(image)
    expected = predict_tiled(predictor, normalize_image(image), tile=32, multiple=8)
    got = predict_tiled(predictor, image, tile=32, multiple=8, prepare=lambda cut: stretch(cut, low, high))
    np.testing.assert_array_equal(got, expected)
    half = predict_tiled(predictor, image, tile=32, multiple=8, prepare=lambda cut: stretch(cut, low, high),
                         dtype=np.float16)
    assert half.dtype == np.float16 and half.nbytes * 2 == expected.nbytes
    np.testing.assert_allclose(half, expected, atol=1e-3)


def test_percentile_bounds_count_in_chunks_like_one_histogram():
    image = np.random.default_rng(2).integers(0, 256, (2100, 2100, 3), dtype=np.uint8)  # > one 4 Mi chunk
    cdf = np.cumsum(np.bincount(image.ravel(), minlength=256))
    expected = (int(np.searchsorted(cdf, 0.005 * cdf[-1])), int(np.searchsorted(cdf, 0.998 * cdf[-1])))
    assert percentile_bounds(image) == expected
