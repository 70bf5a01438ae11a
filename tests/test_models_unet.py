"""build_unet over every registry backbone: shapes, skip strides, truncation,
safe_mode save/load, BatchNorm momentum, freezing, config errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nuclei_search.models.backbones import ENCODER_NAME, backbone_names, skip_strides
from nuclei_search.models.unet import build_unet, encoder_layer, pad_multiple, set_encoder_trainable
from nuclei_search.models.weights import batchnorm_layers
from nuclei_search.config import TrialConfig
from nuclei_search.errors import ConfigError

BACKBONES = backbone_names()
# At depth 5 (build, save, reload) EfficientNetB1 and B2 are left out: they share B0's and B3's skip
# layers (models/backbones.py: _EFFICIENTNET_SKIPS), and test_depth3_one_channel builds every backbone.
DEPTH5_BACKBONES = tuple(name for name in BACKBONES if name not in ("efficientnetb1", "efficientnetb2"))
RNG = np.random.default_rng(0)
SQUARE = RNG.random((1, 64, 64, 3)).astype("float32")
WIDE = RNG.random((1, 96, 160, 3)).astype("float32")

# TF tensors' __array__ lacks numpy 2's `copy` keyword; Keras warns once per weight on save.
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
              pytest.mark.usefixtures("fresh_keras_session")]


def _config(backbone: str, **kw) -> TrialConfig:
    kw.setdefault("base_filters", 8)
    return TrialConfig(backbone=backbone, image_size=64, **kw)


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_depth3_one_channel(backbone):
    cfg = _config(backbone, decoder_depth=3, boundary_channel=False, batch_norm=False)
    model = build_unet(cfg)
    assert pad_multiple(cfg) == 8
    assert model.input.shape == (None, None, None, 3) and model.input.name == "image"
    for x in (SQUARE, WIDE):
        y = _np(model(x, training=False))
        assert y.shape == x.shape[:3] + (1,) and y.dtype == np.float32
        assert np.all((y >= 0) & (y <= 1))
    # the encoder is truncated at the bottleneck (stride 8): deeper stages are not built in
    encoder = encoder_layer(model)
    assert len(encoder.outputs) == len(skip_strides(backbone, 3))
    deepest = _np(encoder(SQUARE)[-1])
    assert deepest.shape[1:3] == (8, 8)
    names = {layer.name for layer in encoder.layers}
    assert not names & {"out_relu", "conv5_block3_out", "post_relu", "top_activation", "encoder_stage4_conv1"}
    assert {"decoder_stage0_upconv", "decoder_stage2_conv2", "mask"} <= {layer.name for layer in model.layers}
    assert "decoder_stage0_bn1" not in {layer.name for layer in model.layers}


@pytest.mark.slow  # builds, saves and reloads the backbones at depth 5 (DEPTH5_BACKBONES)
@pytest.mark.parametrize("backbone", DEPTH5_BACKBONES)
def test_depth5_two_channels_skip_strides_and_safe_mode_roundtrip(backbone, tmp_path):
    cfg = _config(backbone, decoder_depth=5, boundary_channel=True, batch_norm=True, dropout=0.1)
    model = build_unet(cfg)
    # every skip stride: the encoder features have the spatial size 64 / stride
    strides = skip_strides(backbone, 5)
    assert strides[0] == (1 if backbone == "none" else 2) and strides[-1] == 32
    feats = encoder_layer(model)(SQUARE)
    assert [tuple(f.shape[1:3]) for f in feats] == [(64 // s, 64 // s) for s in strides]
    # decoder stage i concatenates the skip at stride 2**(4-i) when the encoder has it
    layer_names = {layer.name for layer in model.layers}
    for stage in range(5):
        assert (f"decoder_stage{stage}_concat" in layer_names) == (2 ** (4 - stage) in strides[:-1] or stage == 4)
        assert f"decoder_stage{stage}_dropout" in layer_names
    # the last up-block sees full resolution: an encoder skip at stride 1 or the image itself
    upconv = model.get_layer("decoder_stage4_upconv").filters
    skip = model.get_layer("encoder").outputs[0].shape[-1] if backbone == "none" else 3
    assert model.get_layer("decoder_stage4_concat").output.shape[-1] == upconv + skip
    # from-scratch encoder: every BatchNorm at momentum 0.9 (keras.applications uses 0.99/0.999)
    bns = batchnorm_layers(encoder_layer(model))
    if backbone != "none" or cfg.batch_norm:
        assert bns and {bn.momentum for bn in bns} == {0.9}
    y_square = _np(model(SQUARE, training=False))
    y_wide = _np(model(WIDE, training=False))
    assert y_square.shape == (1, 64, 64, 2) and y_wide.shape == (1, 96, 160, 2)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(_np(loaded(WIDE, training=False)), y_wide, atol=1e-6)
    assert {bn.momentum for bn in batchnorm_layers(encoder_layer(loaded))} == {bn.momentum for bn in bns}


def test_set_encoder_trainable():
    model = build_unet(_config("mobilenetv3small", decoder_depth=3))
    total = len(model.trainable_weights)
    set_encoder_trainable(model, False)
    assert model.get_layer(ENCODER_NAME).trainable is False
    frozen = len(model.trainable_weights)
    assert 0 < frozen < total
    assert not any(w.path.startswith(ENCODER_NAME) for w in model.trainable_weights)
    set_encoder_trainable(model, True)
    assert len(model.trainable_weights) == total


def test_decoder_filters_grow_with_stride_and_are_capped():
    model = build_unet(_config("none", decoder_depth=5, base_filters=32))
    assert model.get_layer("decoder_stage4_conv2").filters == 32  # stride 1
    assert model.get_layer("decoder_stage1_conv1").filters == 256  # stride 8
    assert model.get_layer("decoder_stage0_conv1").filters == 512  # stride 16, capped
    assert model.get_layer("encoder").get_layer("encoder_stage5_conv1").filters == 512  # capped


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"backbone": "vgg16"}, "unknown backbone"),
        ({"decoder_depth": 6}, "decoder_depth"),
        ({"backbone": "none", "encoder_weights": "imagenet"}, "plain encoder"),
    ],
)
def test_config_errors_are_clear(changes, match):
    cfg = _config("mobilenetv2")
    for key, value in changes.items():
        setattr(cfg, key, value)  # bypass TrialConfig.validate on purpose
    with pytest.raises(ConfigError, match=match):
        build_unet(cfg)
