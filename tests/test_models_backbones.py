"""Backbone registry: names, skip strides, preprocessing layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nuclei_search.models.backbones import (
    BACKBONES,
    STRIDES,
    backbone_names,
    build_plain_encoder,
    get_backbone,
    skip_strides,
    truncate_backbone,
)
from nuclei_search.models.layers import CaffePreprocess, preprocessing_layer
from nuclei_search.config import BACKBONES as CONFIG_BACKBONES
from nuclei_search.errors import ConfigError


pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def test_registry_matches_config_names():
    assert set(backbone_names()) == set(CONFIG_BACKBONES)
    for name, row in BACKBONES.items():
        assert row.strides == STRIDES, name
        assert row.preprocessing in ("symmetric", "caffe", "x255"), name


def test_unknown_backbone_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="unknown backbone 'vgg16'.*mobilenetv2"):
        get_backbone("vgg16")


def test_skip_strides_by_depth():
    assert skip_strides("none", 3) == (1, 2, 4, 8)
    assert skip_strides("mobilenetv2", 3) == (2, 4, 8)
    assert skip_strides("resnet50", 5) == (2, 4, 8, 16, 32)


def test_mobilenetv3_skips_stable_across_builds():
    """Auto-generated activation names change between builds; the pad-input specs don't."""
    x = np.zeros((1, 64, 64, 3), "float32")
    row = get_backbone("mobilenetv3small")
    for _ in range(2):
        enc = truncate_backbone(row.build(), row, 5)
        assert [f.shape[1:3] for f in enc(x)] == [(64 // s, 64 // s) for s in STRIDES]


def test_plain_encoder_levels_and_names():
    enc = build_plain_encoder(depth=3, base_filters=8, batch_norm=True)
    feats = enc(np.zeros((1, 64, 96, 3), "float32"))
    assert [tuple(f.shape) for f in feats] == [(1, 64 // s, 96 // s, 8 * s) for s in (1, 2, 4, 8)]
    names = {layer.name for layer in enc.layers}
    assert {"encoder_stage0_conv1", "encoder_stage3_bn2", "encoder_stage3_pool"} <= names


def test_caffe_preprocess_matches_keras_applications():
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(CaffePreprocess()(x))
    ref = keras.applications.resnet50.preprocess_input(x * 255.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    "kind, expected",
    [("symmetric", (-1.0, 1.0)), ("x255", (0.0, 255.0))],
)
def test_rescaling_preprocessing(kind, expected):
    layer = preprocessing_layer(kind)
    out = keras.ops.convert_to_numpy(layer(np.array([[[[0.0, 1.0, 1.0]]]], "float32")))
    assert out[0, 0, 0, 0] == pytest.approx(expected[0]) and out[0, 0, 0, 1] == pytest.approx(expected[1])
    assert preprocessing_layer("unit") is None
