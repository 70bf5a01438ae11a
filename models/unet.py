"""U-Net: a thin factory (``build_unet``) and a graph function (``unet_graph``).

``build_unet(config)`` validates names, builds the encoder from the backbone registry
as a nested sub-model named ``"encoder"`` (outputs: the features at strides
``skip_strides(backbone, depth)``, the last one the bottleneck at ``2**depth``), loads
encoder weights and fixes the BatchNorm momentum of an untrained encoder. The graph
function only wires layers.

Layout: ``image`` (None, None, 3) float in [0, 1] → ``preprocess`` (backbone specific,
absent for the plain encoder) → ``encoder`` → ``decoder_depth`` up-blocks
``decoder_stage{i}_*`` (i = 0 is the deepest; the last one concatenates the image
itself when the encoder has no stride-1 feature) → ``mask``: 1×1 conv + sigmoid, float32,
1 channel (nucleus) or 2 (``boundary_channel``: ch0 nucleus, ch1 contour). The model
is fully convolutional: any input whose sides are multiples of ``pad_multiple(config)``.
"""

from __future__ import annotations

import logging
from typing import Sequence

import keras
from keras import layers

from nuclei_search.models import weights as weights_lib
from nuclei_search.models.backbones import (
    ENCODER_NAME,
    MAX_FILTERS,
    PLAIN,
    build_plain_encoder,
    get_backbone,
    skip_strides,
    truncate_backbone,
)
from nuclei_search.models.layers import preprocessing_layer
from nuclei_search.models.precision import dtype_policy, policy_name
from nuclei_search.config import TrialConfig
from nuclei_search.errors import ConfigError

logger = logging.getLogger(__name__)

DECODER_BN_MOMENTUM = 0.9


def pad_multiple(config: TrialConfig) -> int:
    """Input sides must be multiples of this (2**decoder_depth)."""
    return 2 ** int(config.decoder_depth)


def output_channels(config: TrialConfig) -> int:
    return 2 if config.boundary_channel else 1


def decoder_filters(base_filters: int, stride: int) -> int:
    """Filters of the up-block whose output is at ``stride``."""
    return int(min(base_filters * stride, MAX_FILTERS))


def encoder_layer(model: keras.Model) -> keras.Model:
    """The nested encoder sub-model of a U-Net built (or loaded) here."""
    try:
        return model.get_layer(ENCODER_NAME)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no '{ENCODER_NAME}' sub-model; was it built by build_unet?") from None


def set_encoder_trainable(model: keras.Model, trainable: bool) -> None:
    """Freeze (False) or unfreeze (True) the encoder. Re-``compile`` afterwards.

    Frozen BatchNorm layers run in inference mode (Keras 3 semantics).
    """
    encoder_layer(model).trainable = bool(trainable)


def _up_block(x, skip, filters: int, stage: int, batch_norm: bool, dropout: float):
    p = f"decoder_stage{stage}"
    x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{p}_upconv")(x)
    if skip is not None:
        x = layers.Concatenate(axis=-1, name=f"{p}_concat")([x, skip])
    for j in (1, 2):
        x = layers.Conv2D(
            filters, 3, padding="same", use_bias=not batch_norm, kernel_initializer="he_normal", name=f"{p}_conv{j}"
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=DECODER_BN_MOMENTUM, name=f"{p}_bn{j}")(x)
        x = layers.Activation("relu", name=f"{p}_relu{j}")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{p}_dropout")(x)
    return x


def unet_graph(
    encoder: keras.Model,
    strides: Sequence[int],
    *,
    preprocess: layers.Layer | None,
    base_filters: int,
    batch_norm: bool,
    dropout: float,
    out_channels: int,
    name: str = "unet",
) -> keras.Model:
    """Wire a U-Net around ``encoder``.

    ``encoder`` maps the (preprocessed) image to ``len(strides)`` features at the given
    ascending ``strides``; the last is the bottleneck. One up-block per factor 2 from
    the bottleneck down to stride 1, concatenating the skip at its output stride when
    the encoder has one, and the input image at stride 1 when it has none.
    """
    strides = list(strides)
    if len(strides) != len(encoder.outputs):
        raise ValueError(f"encoder has {len(encoder.outputs)} outputs but {len(strides)} strides were given")
    inputs = keras.Input((None, None, 3), name="image")
    x = preprocess(inputs) if preprocess is not None else inputs
    features = encoder(x)
    if not isinstance(features, (list, tuple)):
        features = [features]
    by_stride = dict(zip(strides, features))
    # keras.applications encoders start at stride 2: the last up-block concatenates the
    # (preprocessed) image itself, so full-resolution detail reaches the mask head
    # (small nuclei are a few pixels across).
    by_stride.setdefault(1, x)
    x = by_stride[strides[-1]]
    depth = strides[-1].bit_length() - 1
    for stage in range(depth):
        out_stride = 2 ** (depth - stage - 1)
        x = _up_block(
            x, by_stride.get(out_stride), decoder_filters(base_filters, out_stride), stage, batch_norm, dropout
        )
    outputs = layers.Conv2D(out_channels, 1, activation="sigmoid", dtype="float32", name="mask")(x)
    return keras.Model(inputs, outputs, name=name)


def build_encoder(config: TrialConfig) -> tuple[keras.Model, tuple[int, ...]]:
    """The nested ``encoder`` sub-model for ``config`` and the strides of its outputs.

    Loads the configured encoder weights; when they are ``none``, every encoder
    BatchNorm layer gets momentum 0.9: keras.applications sets 0.999, tuned for fine-tuning
    pretrained statistics; from scratch, running statistics that slow lag the weights for
    hundreds of steps and validation (inference mode) predicts background for epochs.
    """
    depth = int(config.decoder_depth)
    weights = str(config.encoder_weights)
    strides = skip_strides(config.backbone, depth)
    if config.backbone == PLAIN:
        if weights != "none":
            raise ConfigError(
                f"config field 'encoder_weights': the plain encoder (backbone 'none') has no pretrained "
                f"weights; use encoder_weights 'none' (got {weights!r})"
            )
        encoder = build_plain_encoder(depth, int(config.base_filters), bool(config.batch_norm))
        return encoder, strides
    backbone = get_backbone(config.backbone)
    if weights == "imagenet":
        full = weights_lib.build_imagenet(backbone)
    else:
        full = backbone.build(weights=None)
    encoder = truncate_backbone(full, backbone, depth)
    if weights not in ("none", "imagenet"):
        weights_lib.load_local_weights(backbone, full, encoder, weights)
    if weights == "none":
        n = weights_lib.set_bn_momentum(encoder, weights_lib.SCRATCH_BN_MOMENTUM)
        logger.debug("encoder %s from scratch: %d BatchNorm layers set to momentum %.2f", backbone.name, n,
                     weights_lib.SCRATCH_BN_MOMENTUM)
    return encoder, strides


def build_unet(config: TrialConfig, dtype_policy_name: str | None = None) -> keras.Model:
    """The U-Net described by ``config`` (backbone, encoder_weights, decoder_depth,
    base_filters, batch_norm, dropout, boundary_channel, precision). Not compiled.

    ``dtype_policy_name`` (a Keras dtype policy) overrides what ``config.precision``
    resolves to on this machine (``models.precision.policy_name``), e.g. to build for a GPU."""
    config.validate()  # the one set of rules; a config changed field by field is checked again here
    policy = dtype_policy_name or policy_name(config.precision)
    with dtype_policy(policy):
        encoder, strides = build_encoder(config)
        preprocess = None if config.backbone == PLAIN else preprocessing_layer(get_backbone(config.backbone).preprocessing)
        model = unet_graph(
            encoder,
            strides,
            preprocess=preprocess,
            base_filters=int(config.base_filters),
            batch_norm=bool(config.batch_norm),
            dropout=float(config.dropout),
            out_channels=output_channels(config),
            name=f"unet_{config.backbone}_d{config.decoder_depth}",
        )
    logger.info(
        "built %s: %d parameters (encoder %d), skips at strides %s, dtype policy %s",
        model.name, model.count_params(), encoder.count_params(), list(strides[:-1]), policy,
    )
    return model


def load_unet(path, compile: bool = True) -> keras.Model:
    """``keras.models.load_model(path, safe_mode=True)`` with this package's custom
    objects (preprocessing layer, losses, metrics) registered first."""
    from nuclei_search.models import layers, losses, metrics  # noqa: F401  (registering is importing)

    return keras.models.load_model(path, safe_mode=True, compile=compile)
