"""Small registered Keras layers used inside the exported models.

Everything here is serialisable with ``safe_mode=True`` (no Lambda layers), so a saved
``model.keras`` is self-contained: ``keras.models.load_model(path, safe_mode=True)``
works after ``import nuclei_search.models.layers`` (which registers the classes below).
"""

from __future__ import annotations

import keras
from keras import layers, ops

# ImageNet channel means in BGR order, as used by keras.applications "caffe" mode.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="nuclei_search")
class CaffePreprocess(layers.Layer):
    """Map an RGB image in [0, 1] to keras.applications "caffe" input.

    ×255, RGB → BGR, then subtract the ImageNet mean per channel (no scaling), which
    is what ``keras.applications.resnet50.preprocess_input`` does to [0, 255] RGB.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype) * 255.0
        x = ops.flip(x, axis=-1)
        mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        return x - mean

    def compute_output_shape(self, input_shape):
        return input_shape


def preprocessing_layer(kind: str, name: str = "preprocess") -> layers.Layer | None:
    """The Keras layer that maps the U-Net's [0, 1] input to what an encoder expects.

    kind: ``"unit"`` (identity, returns None), ``"symmetric"`` ([-1, 1]),
    ``"caffe"`` (see CaffePreprocess) or ``"x255"`` ([0, 255]).
    """
    if kind == "unit":
        return None
    if kind == "symmetric":
        return layers.Rescaling(2.0, offset=-1.0, name=name)
    if kind == "x255":
        return layers.Rescaling(255.0, name=name)
    if kind == "caffe":
        return CaffePreprocess(name=name)
    raise ValueError(f"unknown preprocessing kind {kind!r}; expected unit, symmetric, x255 or caffe")


# --------------------------------------------------------------------------- ensembles
@keras.saving.register_keras_serializable(package="nuclei_search")
class PadToMultiple(layers.Layer):
    """Pad an NHWC batch at the bottom/right so H and W become multiples of `multiple`.

    Reflect padding, or zeros when the padding is not smaller than the side (as
    `models.inference.predict_images` pads whole images), so a member of an ensemble
    sees exactly what it would see predicted on its own.
    """

    def __init__(self, multiple: int, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, inputs):
        shape = ops.shape(inputs)
        h, w = shape[1], shape[2]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        widths = [[0, 0], [0, ph], [0, pw], [0, 0]]
        if self.multiple == 1:
            return inputs
        return ops.cond(
            ops.logical_and(ph < h, pw < w),
            lambda: ops.pad(inputs, widths, mode="reflect"),
            lambda: ops.pad(inputs, widths, mode="constant"),
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, None, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="nuclei_search")
class CropToReference(layers.Layer):
    """`inputs = [x, reference]`: x cropped to the reference's H and W and its first `channels` channels."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def call(self, inputs):
        x, reference = inputs
        shape = ops.shape(reference)
        return x[:, : shape[1], : shape[2], : self.channels]

    def compute_output_shape(self, input_shapes):
        shape = input_shapes[1]
        return (shape[0], shape[1], shape[2], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="nuclei_search")
class WeightedMean(layers.Layer):
    """The weighted mean of its inputs (same shape), weights normalised to sum to 1."""

    def __init__(self, weights: list[float], **kwargs):
        super().__init__(**kwargs)
        total = float(sum(weights))
        if not weights or total <= 0 or any(w < 0 for w in weights):
            raise ValueError(f"WeightedMean needs non-negative weights with a positive sum (got {weights})")
        self.member_weights = [float(w) for w in weights]
        self._normalised = [w / total for w in self.member_weights]

    def call(self, inputs):
        out = inputs[0] * self._normalised[0]
        for x, w in zip(inputs[1:], self._normalised[1:]):
            out = out + x * w
        return out

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "weights": self.member_weights}
