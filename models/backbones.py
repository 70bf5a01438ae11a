"""Backbone registry: one row per encoder, mapping a name to everything the U-Net needs.

A row holds the ``keras.applications`` constructor, the skip features by output stride
(by layer *name*, never by index), the preprocessing that maps the U-Net's [0, 1] input
to what the backbone expects, and the name of its ImageNet "no top" weights file.
Adding a backbone is one row in ``BACKBONES``.

Skip features are addressed as ``SkipSpec(layer, port)``: the ``output`` of a named
layer, or its ``input`` — needed for MobileNetV3, whose activation layers get
auto-generated names (``activation_17``, ``re_lu_13``) that change from one build to
the next in a process; the inputs of its explicitly named ``*_depthwise_pad`` layers
are stable. ``layer=None`` means the backbone's own output.

The plain encoder (``"none"``) is a classic U-Net encoder: per level two
conv3×3[-BN]-ReLU, then max-pool, with ``base_filters · 2**level`` filters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import keras
from keras import layers

from nuclei_search.errors import ConfigError

logger = logging.getLogger(__name__)

STRIDES = (2, 4, 8, 16, 32)
MAX_FILTERS = 512
ENCODER_NAME = "encoder"


@dataclass(frozen=True)
class SkipSpec:
    """A feature map of a backbone: the output (or input) of the named layer."""

    layer: str | None  # None: the backbone model's output
    port: str = "output"  # "output" | "input"


@dataclass(frozen=True)
class Backbone:
    """One registry row."""

    name: str
    constructor: str  # attribute of keras.applications
    skips: Mapping[int, SkipSpec]  # output stride -> feature
    preprocessing: str  # "unit" | "symmetric" | "caffe" | "x255" (see models.layers)
    imagenet_file: str | None = None  # keras cache file name of the no-top weights
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(sorted(self.skips))

    def build(self, weights: str | None = None) -> keras.Model:
        """The full keras.applications model, (None, None, 3) input, no top."""
        ctor = getattr(keras.applications, self.constructor)
        return ctor(input_shape=(None, None, 3), include_top=False, weights=weights, **self.kwargs)


def _out(name: str | None) -> SkipSpec:
    return SkipSpec(name, "output")


def _in(name: str) -> SkipSpec:
    return SkipSpec(name, "input")


_EFFICIENTNET_SKIPS = {
    2: _out("block2a_expand_activation"),
    4: _out("block3a_expand_activation"),
    8: _out("block4a_expand_activation"),
    16: _out("block6a_expand_activation"),
    32: _out("top_activation"),
}

BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "mobilenetv2",
            "MobileNetV2",
            {
                2: _out("block_1_expand_relu"),
                4: _out("block_3_expand_relu"),
                8: _out("block_6_expand_relu"),
                16: _out("block_13_expand_relu"),
                32: _out("out_relu"),
            },
            "symmetric",
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ),
        Backbone(
            "mobilenetv3small",
            "MobileNetV3Small",
            {
                2: _in("expanded_conv_depthwise_pad"),
                4: _in("expanded_conv_1_depthwise_pad"),
                8: _in("expanded_conv_3_depthwise_pad"),
                16: _in("expanded_conv_8_depthwise_pad"),
                32: _out(None),
            },
            "x255",
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            {"include_preprocessing": True},
        ),
        Backbone(
            "mobilenetv3large",
            "MobileNetV3Large",
            {
                2: _in("expanded_conv_1_depthwise_pad"),
                4: _in("expanded_conv_3_depthwise_pad"),
                8: _in("expanded_conv_6_depthwise_pad"),
                16: _in("expanded_conv_12_depthwise_pad"),
                32: _out(None),
            },
            "x255",
            "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
            {"include_preprocessing": True},
        ),
        Backbone(
            "resnet50",
            "ResNet50",
            {
                2: _out("conv1_relu"),
                4: _out("conv2_block3_out"),
                8: _out("conv3_block4_out"),
                16: _out("conv4_block6_out"),
                32: _out("conv5_block3_out"),
            },
            "caffe",
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        # ResNetV2 downsamples in the LAST block of each stack and its block outputs
        # are pre-activation sums; the stable stride-s features are the pre-activated
        # residual streams entering the last block of each stack (full width).
        Backbone(
            "resnet50v2",
            "ResNet50V2",
            {
                2: _out("conv1_conv"),
                4: _out("conv2_block3_preact_relu"),
                8: _out("conv3_block4_preact_relu"),
                16: _out("conv4_block6_preact_relu"),
                32: _out("post_relu"),
            },
            "symmetric",
            "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        *(
            Backbone(f"efficientnetb{i}", f"EfficientNetB{i}", _EFFICIENTNET_SKIPS, "x255", f"efficientnetb{i}_notop.h5")
            for i in range(4)
        ),
    )
}

PLAIN = "none"


def backbone_names() -> tuple[str, ...]:
    """All valid ``TrialConfig.backbone`` values, the plain encoder first."""
    return (PLAIN, *BACKBONES)


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(
            f"unknown backbone {name!r}; expected one of {', '.join(backbone_names())}"
        ) from None


def skip_strides(name: str, depth: int) -> tuple[int, ...]:
    """Strides of the features an encoder of ``depth`` levels returns, ascending.

    The last one (``2**depth``) is the bottleneck; the others are skips. The plain
    encoder also has a stride-1 skip; keras.applications backbones do not.
    """
    if name == PLAIN:
        return tuple(2**i for i in range(depth + 1))
    return tuple(s for s in get_backbone(name).strides if s <= 2**depth)


def feature_tensor(model: keras.Model, spec: SkipSpec):
    """The symbolic tensor a SkipSpec names inside a built keras.applications model."""
    if spec.layer is None:
        return model.output
    try:
        layer = model.get_layer(spec.layer)
    except ValueError:
        raise ConfigError(
            f"backbone {model.name!r} has no layer {spec.layer!r} (keras {keras.__version__}); "
            "the backbone registry needs updating for this Keras version"
        ) from None
    return layer.input if spec.port == "input" else layer.output


def truncate_backbone(model: keras.Model, backbone: Backbone, depth: int, name: str = ENCODER_NAME) -> keras.Model:
    """A sub-model of ``model`` returning the features at strides 2..2**depth.

    Only the layers these features depend on are part of the result, so the stages
    deeper than the bottleneck are not in the U-Net graph. Layers (and weights) are
    shared with ``model``.
    """
    strides = skip_strides(backbone.name, depth)
    if not strides or strides[-1] != 2**depth:
        raise ConfigError(f"backbone {backbone.name!r} has no feature at stride {2**depth}")
    outputs = [feature_tensor(model, backbone.skips[s]) for s in strides]
    return keras.Model(model.input, outputs, name=name)


def build_plain_encoder(
    depth: int, base_filters: int, batch_norm: bool, bn_momentum: float = 0.9, name: str = ENCODER_NAME
) -> keras.Model:
    """Classic U-Net encoder returning features at strides 1, 2, ..., 2**depth."""
    inputs = keras.Input((None, None, 3), name="encoder_input")
    x = inputs
    features = []
    for level in range(depth + 1):
        if level:
            x = layers.MaxPooling2D(2, name=f"encoder_stage{level}_pool")(x)
        filters = min(base_filters * 2**level, MAX_FILTERS)
        for j in (1, 2):
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=not batch_norm, kernel_initializer="he_normal",
                name=f"encoder_stage{level}_conv{j}",
            )(x)
            if batch_norm:
                x = layers.BatchNormalization(momentum=bn_momentum, name=f"encoder_stage{level}_bn{j}")(x)
            x = layers.Activation("relu", name=f"encoder_stage{level}_relu{j}")(x)
        features.append(x)
    return keras.Model(inputs, features, name=name)
