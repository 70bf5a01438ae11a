"""Small registered Keras layers used inside the exported models.

Everything here is serialisable with ``safe_mode=True`` (no Lambda layers), so a saved
``model.keras`` is self-contained: ``keras.models.load_model(path, safe_mode=True)``
works after ``import models`` (which registers the classes below).
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
