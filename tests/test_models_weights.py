"""Encoder weights: imagenet fails fast offline; local weights files load for real."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest

from nuclei_search.models.backbones import get_backbone
from nuclei_search.models.unet import build_unet, encoder_layer
from nuclei_search.models.weights import batchnorm_layers, cached_imagenet_file, host_reachable
from nuclei_search.config import TrialConfig
from nuclei_search.errors import ConfigError, NucleiSearchError

# TF tensors' __array__ lacks numpy 2's `copy` keyword; Keras warns once per weight on save.
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
              pytest.mark.usefixtures("fresh_keras_session")]


def _config(backbone: str, weights: str, depth: int = 4) -> TrialConfig:
    return TrialConfig(backbone=backbone, encoder_weights=weights, decoder_depth=depth, base_filters=8, image_size=64)


def _by_path(model: keras.Model) -> dict[str, np.ndarray]:
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


def test_imagenet_offline_fails_fast_with_guidance():
    backbone = get_backbone("mobilenetv2")
    if cached_imagenet_file(backbone) is not None or host_reachable(timeout=3.0):
        # a machine with the weights: the real ImageNet path must build (no offline error to see)
        assert build_unet(_config("mobilenetv2", "imagenet")).get_layer("encoder") is not None
        return
    start = time.monotonic()
    with pytest.raises(NucleiSearchError, match=r"could not download ImageNet weights for mobilenetv2 \(no internet\?\)"
                       r".*--encoder-weights none or a local weights file"):
        build_unet(_config("mobilenetv2", "imagenet"))
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("source", ["backbone", "unet_encoder"])
def test_local_weights_file_is_loaded(tmp_path, source):
    row = get_backbone("mobilenetv3small")
    path = tmp_path / "encoder.weights.h5"
    if source == "backbone":
        donor = row.build()  # the full keras.applications model
    else:
        donor = encoder_layer(build_unet(_config("mobilenetv3small", "none")))
    donor.save_weights(path)
    expected = {w.path: keras.ops.convert_to_numpy(w) for w in donor.weights}

    model = build_unet(_config("mobilenetv3small", str(path)))
    encoder = encoder_layer(model)
    loaded = _by_path(encoder)
    assert loaded and set(loaded) <= set(expected)
    for name, value in loaded.items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    # pretrained: BatchNorm momentum left as keras.applications set it (0.999)
    assert {bn.momentum for bn in batchnorm_layers(encoder)} == {0.999}
    # and a fresh model really differs (the check above is not vacuous)
    fresh = _by_path(encoder_layer(build_unet(_config("mobilenetv3small", "none"))))
    assert any(not np.array_equal(fresh[k], v) for k, v in loaded.items() if k in fresh)


def test_missing_weights_file(tmp_path):
    with pytest.raises(ConfigError, match="encoder weights file not found"):
        build_unet(_config("mobilenetv2", str(tmp_path / "nope.weights.h5")))


def test_incompatible_weights_file(tmp_path):
    path = tmp_path / "v3.weights.h5"
    get_backbone("mobilenetv3small").build().save_weights(path)
    with pytest.raises(ConfigError, match="does not fit backbone 'resnet50'"):
        build_unet(_config("resnet50", str(path), depth=3))


def test_depth5_file_from_depth3_encoder_is_rejected(tmp_path):
    path = tmp_path / "shallow.weights.h5"
    encoder_layer(build_unet(_config("mobilenetv3small", "none", depth=3))).save_weights(path)
    with pytest.raises(ConfigError, match="does not fit backbone 'mobilenetv3small'"):
        build_unet(_config("mobilenetv3small", str(path), depth=5))
