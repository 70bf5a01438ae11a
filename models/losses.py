"""Segmentation losses, applied over all output channels (mask, and boundary if any).

Binary cross-entropy and focal loss are Keras' own (`keras.losses.BinaryCrossentropy`,
`BinaryFocalCrossentropy` with class balancing), registered under this package's names so
models saved with them load; soft Dice and BCE + Dice are written here (Keras' `Dice` loss
pools the whole batch into one ratio, these take it per sample and channel). Every loss
averages over pixels and channels and Keras' reduction over the batch, so `sample_weight`
works as usual. ``get_loss(name)`` maps ``TrialConfig.loss`` to an instance.
"""

from __future__ import annotations

import keras
from keras import ops

from nuclei_search.errors import ConfigError

_EPS = 1e-7
_SPATIAL = (1, 2)


def _prep(y_true, y_pred):
    y_pred = ops.convert_to_tensor(y_pred)
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "float32")
    return y_true, ops.clip(y_pred, _EPS, 1.0 - _EPS)


@keras.saving.register_keras_serializable(package="nuclei_search")
class BinaryCrossentropyLoss(keras.losses.BinaryCrossentropy):
    """Keras' pixel-wise binary cross-entropy on sigmoid probabilities, named ``bce``."""

    def __init__(self, name: str = "bce", reduction: str = "sum_over_batch_size", dtype=None, **kwargs):
        super().__init__(name=name, reduction=reduction, dtype=dtype, **kwargs)


@keras.saving.register_keras_serializable(package="nuclei_search")
class DiceLoss(keras.losses.Loss):
    """Soft Dice loss, 1 − (2·Σyp + s)/(Σy + Σp + s) per sample and channel, averaged
    over channels. ``smooth`` keeps empty masks well defined (empty vs ~0 → ~0 loss)."""

    def __init__(self, smooth: float = 1.0, name: str = "dice", reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        y_true, y_pred = _prep(y_true, y_pred)
        inter = ops.sum(y_true * y_pred, axis=_SPATIAL)
        total = ops.sum(y_true, axis=_SPATIAL) + ops.sum(y_pred, axis=_SPATIAL)
        dice = (2.0 * inter + self.smooth) / (total + self.smooth)
        return ops.mean(1.0 - dice, axis=-1)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="nuclei_search")
class BCEDiceLoss(keras.losses.Loss):
    """``bce_weight``·BCE + ``dice_weight``·soft Dice."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0,
                 name: str = "bce_dice", reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)
        self._bce = BinaryCrossentropyLoss()
        self._dice = DiceLoss(smooth=smooth)

    def call(self, y_true, y_pred):
        bce = ops.mean(self._bce.call(y_true, y_pred), axis=_SPATIAL)  # Keras' BCE: per pixel, channels averaged
        return self.bce_weight * bce + self.dice_weight * self._dice.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "bce_weight": self.bce_weight, "dice_weight": self.dice_weight,
                "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="nuclei_search")
class FocalLoss(keras.losses.BinaryFocalCrossentropy):
    """Keras' binary focal loss (Lin et al. 2017) with class balancing, −α_t (1 − p_t)^γ log p_t,
    named ``focal``."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, name: str = "focal",
                 reduction: str = "sum_over_batch_size", dtype=None, **kwargs):
        kwargs.setdefault("apply_class_balancing", True)
        super().__init__(alpha=alpha, gamma=gamma, name=name, reduction=reduction, dtype=dtype, **kwargs)


LOSSES = {
    "bce": BinaryCrossentropyLoss,
    "dice": DiceLoss,
    "bce_dice": BCEDiceLoss,
    "focal": FocalLoss,
}


def get_loss(name: str, **kwargs) -> keras.losses.Loss:
    """A fresh loss instance for ``TrialConfig.loss``."""
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ConfigError(f"config field 'loss': expected one of {', '.join(LOSSES)} (got {name!r})") from None
    return cls(**kwargs)
