"""Whole-image inference with a fully convolutional U-Net.

Images keep their size and aspect ratio: each is padded (reflect) up to a multiple of
the network's stride, predicted, and cropped back. Images of the same shape are
predicted together, in batches bounded by a pixel budget. Very large images are cut
into overlapping tiles (evenly laid out, shared margin of two bottleneck cells) whose
predictions are blended with a linear window, so memory stays bounded at any size.

Predictions run through `GraphPredictor`: the model traced once as a TensorFlow graph
with its weights frozen in as constants, which lets TensorFlow's graph optimiser fold
the inference-mode BatchNorm layers into the convolutions (validation 1.2-1.3x faster on a
CPU than `predict_on_batch`, same numbers; BENCHMARKS.md, `train_step`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np

#: Pixels predicted in one batch (e.g. 16 images of 512x512); bounds memory.
PIXEL_BUDGET = 4_194_304


class GraphPredictor:
    """A snapshot of a Keras model for inference: one graph, weights as constants.

    Weights changed after it was made are not seen (make a new one after training
    more). Any image size (the graph has no fixed spatial shape). With `freeze=False`,
    or on a Keras backend other than TensorFlow, it calls the model's own `predict_on_batch`.
    """

    def __init__(self, model, freeze: bool = True):
        import keras

        self.model = model
        self._frozen = None
        if freeze and keras.backend.backend() == "tensorflow":
            import tensorflow as tf
            from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

            channels = model.input_shape[-1]
            traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(
                tf.TensorSpec([None, None, None, channels], tf.float32))
            self._frozen = convert_variables_to_constants_v2(traced)

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        if self._frozen is None:
            return np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)
        import tensorflow as tf

        out = self._frozen(tf.convert_to_tensor(batch, dtype=tf.float32))
        out = out[0] if isinstance(out, (list, tuple)) else out
        return np.asarray(out, dtype=np.float32)


#: Freezing costs about a second (MobileNetV2 U-Net); below this many pixels to predict
#: it would not pay for itself.
FREEZE_MIN_PIXELS = 2_000_000


def as_predictor(model, pixels: int | None = None) -> GraphPredictor:
    """`model` itself if it is a GraphPredictor already, else a snapshot of it, frozen when
    `pixels` (to be predicted with it; None: unknown) make that worth it."""
    if isinstance(model, GraphPredictor):
        return model
    return GraphPredictor(model, freeze=pixels is None or pixels >= FREEZE_MIN_PIXELS)


def _pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = image.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "constant"
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)
    return image, (h, w)


def predict_images(
    model,
    images: Sequence[np.ndarray],
    multiple: int,
    pixel_budget: int = PIXEL_BUDGET,
    tile: int | None = None,
) -> list[np.ndarray]:
    """Predict float32 HxWxC probability maps for normalised float32 HxWx3 images.

    `model` is a Keras model or a `GraphPredictor` of one (pass one when predicting
    image by image). `multiple` is the network's stride (2**decoder_depth). With `tile`
    set, images larger than the tile are predicted tile by tile (see `predict_tiled`).
    """
    model = as_predictor(model, pixels=sum(int(np.prod(image.shape[:2])) for image in images))
    out: list[np.ndarray | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        if tile and max(image.shape[:2]) > tile:
            out[i] = predict_tiled(model, image, tile=tile, multiple=multiple)
        else:
            groups[image.shape[:2]].append(i)
    for (h, w), idx in groups.items():
        padded_h, padded_w = h + (-h) % multiple, w + (-w) % multiple
        per_batch = max(1, pixel_budget // (padded_h * padded_w))
        for start in range(0, len(idx), per_batch):
            chunk = idx[start : start + per_batch]
            batch = np.stack([_pad_to_multiple(images[i], multiple)[0] for i in chunk])
            pred = model.predict_on_batch(batch)
            for j, i in enumerate(chunk):
                out[i] = pred[j, :h, :w]
    return out  # type: ignore[return-value]


def _window(height: int, width: int, ramp: int) -> np.ndarray:
    """A blending window that is 1 inside and falls linearly to a small value within
    `ramp` pixels of the edges (so overlapping tiles fade into each other)."""
    def axis(size: int) -> np.ndarray:
        distance = np.minimum(np.arange(size) + 1, np.arange(size)[::-1] + 1).astype(np.float32)
        return np.clip(distance / max(1, ramp), 1e-3, 1.0)

    return np.outer(axis(height), axis(width))[..., None]


def tile_layout(length: int, tile: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """(tile side, start offsets) covering [0, length) with tiles of at most `tile`.

    Uses the fewest tiles that keep at least `overlap` shared pixels, then shrinks them
    evenly (to a multiple of the network stride) so that little is predicted twice:
    1392 px with tile 512 and overlap 32 → three 496-px tiles, not four of 512.
    `length` must be a multiple of `multiple`.
    """
    if length <= tile:
        return length, [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    side = math.ceil((length + (n - 1) * overlap) / n)
    side = min(tile, side + (-side) % multiple)
    starts = [round(i * (length - side) / (n - 1)) for i in range(n)]
    return side, starts


def default_overlap(multiple: int) -> int:
    """Pixels shared by neighbouring tiles: two bottleneck cells (2 × the network stride)."""
    return 2 * multiple


def predict_tiled(model, image: np.ndarray, tile: int, multiple: int, overlap: int | None = None,
                  batch_size: int = 8) -> np.ndarray:
    """Predict a large image with overlapping tiles of at most `tile`×`tile`, blended smoothly."""
    if tile % multiple:
        raise ValueError(f"tile {tile} must be a multiple of the network stride {multiple}")
    overlap = default_overlap(multiple) if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap {overlap} must be in [0, {tile})")
    model = as_predictor(model, pixels=int(np.prod(image.shape[:2])))
    padded, (h, w) = _pad_to_multiple(image, multiple)
    H, W = padded.shape[:2]
    tile_h, rows = tile_layout(H, tile, overlap, multiple)
    tile_w, cols = tile_layout(W, tile, overlap, multiple)
    window = _window(tile_h, tile_w, ramp=max(1, overlap))
    acc = None
    weight = np.zeros((H, W, 1), np.float32)
    coords = [(y, x) for y in rows for x in cols]
    for start in range(0, len(coords), batch_size):
        chunk = coords[start : start + batch_size]
        batch = np.stack([padded[y : y + tile_h, x : x + tile_w] for y, x in chunk])
        pred = model.predict_on_batch(batch)
        if acc is None:
            acc = np.zeros((H, W, pred.shape[-1]), np.float32)
        for (y, x), p in zip(chunk, pred):
            acc[y : y + tile_h, x : x + tile_w] += p * window
            weight[y : y + tile_h, x : x + tile_w] += window
    return (acc / weight)[:h, :w]
