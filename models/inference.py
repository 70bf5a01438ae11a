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

Test-time augmentation (`predict_images_tta`) averages the 8 flips/rotations of each
image, each prediction exactly inverted; whether it pays is chosen on validation at
export (results.export) and stored in the model card.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np

#: Pixels predicted in one batch (e.g. 16 images of 512x512); bounds memory.
PIXEL_BUDGET = 4_194_304
#: Pixels of tiles predicted in one call by `predict_tiled`: the network's activations for
#: one 512x512 tile of the MobileNetV2 U-Net take ~160 MB, eight 1024x1024 tiles ~3.4 GB
#: (benchmarks/predict_memory.py); on a CPU a batch of tiles is no faster than one by one.
TILE_BATCH_PIXELS = 512 * 512


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


TTA_TRANSFORMS = tuple((k, flip) for flip in (False, True) for k in range(4))  # (quarter turns, mirror)


def tta_forward(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """One view of a HxWxC image: mirrored left-right if `flip`, then turned k quarter turns."""
    if flip:
        image = image[:, ::-1]
    return np.ascontiguousarray(np.rot90(image, k, axes=(0, 1)))


def tta_inverse(pred: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """A view's prediction back in the image's frame (undoes `tta_forward`)."""
    pred = np.rot90(pred, -k, axes=(0, 1))
    if flip:
        pred = pred[:, ::-1]
    return pred


def predict_images_tta(model, images: Sequence[np.ndarray], multiple: int, tile: int | None = None) -> list[np.ndarray]:
    """`predict_images` averaged over the 8 views of `TTA_TRANSFORMS`, one view of every image at
    a time (memory: the images, one view of them and the float32 sums)."""
    model = as_predictor(model, pixels=8 * sum(int(np.prod(image.shape[:2])) for image in images))
    sums: list[np.ndarray] | None = None
    for k, flip in TTA_TRANSFORMS:
        views = predict_images(model, [tta_forward(image, k, flip) for image in images], multiple, tile=tile)
        back = [tta_inverse(pred, k, flip) for pred in views]
        if sums is None:
            sums = [np.array(pred, dtype=np.float32) for pred in back]
        else:
            for total, pred in zip(sums, back):
                total += pred
    return [total / np.float32(len(TTA_TRANSFORMS)) for total in sums or []]


def _ramp(size: int, ramp: int) -> np.ndarray:
    """One axis of the blending window: 1 inside, falling linearly to a small value within
    `ramp` pixels of both ends (so overlapping tiles fade into each other). The 2-D window
    is the outer product of two ramps, which makes the summed weights separable too."""
    distance = np.minimum(np.arange(size) + 1, np.arange(size)[::-1] + 1).astype(np.float32)
    return np.clip(distance / max(1, ramp), 1e-3, 1.0)


def _reflect_index(padded: int, size: int) -> np.ndarray:
    """Source row (or column) of each position of an axis padded from `size` to `padded` by
    reflection, as `np.pad(mode="reflect")` does (needs padded - size < size)."""
    index = np.arange(padded)
    return np.where(index < size, index, 2 * (size - 1) - index)


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
                  batch_size: int | None = None, prepare=None, dtype=np.float32) -> np.ndarray:
    """Predict a large image with overlapping tiles of at most `tile`×`tile`, blended smoothly.

    `image` is a normalised float32 HxWx3 image, or any HxWx3 array with `prepare` turning
    one tile of it into network input (e.g. the percentile stretch of a uint8 image). Tiles
    are cut (reflect-padded at the far edges) and blended one row of tiles at a time, so
    memory is the image, the output map (`dtype`: float16 halves it) and one band of tiles,
    whatever the image size (`benchmarks/predict_memory.py`: 64 Mpx). `batch_size`: tiles
    per call (default: as many as fit in TILE_BATCH_PIXELS, at least one).
    """
    if tile % multiple:
        raise ValueError(f"tile {tile} must be a multiple of the network stride {multiple}")
    overlap = default_overlap(multiple) if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap {overlap} must be in [0, {tile})")
    h, w = image.shape[:2]
    model = as_predictor(model, pixels=h * w)
    H, W = h + (-h) % multiple, w + (-w) % multiple
    if H - h >= h or W - w >= w:  # a side shorter than its padding: np.pad's rules, on a small image
        image = _pad_to_multiple(image, multiple)[0]
    ys, xs = _reflect_index(H, image.shape[0]), _reflect_index(W, image.shape[1])
    tile_h, rows = tile_layout(H, tile, overlap, multiple)
    tile_w, cols = tile_layout(W, tile, overlap, multiple)
    ramp_y, ramp_x = _ramp(tile_h, overlap), _ramp(tile_w, overlap)
    weight_y, weight_x = np.zeros(H, np.float32), np.zeros(W, np.float32)
    for y in rows:
        weight_y[y : y + tile_h] += ramp_y
    for x in cols:
        weight_x[x : x + tile_w] += ramp_x
    window = np.outer(ramp_y, ramp_x)[..., None]
    prepare = prepare or (lambda cut: cut)
    batch_size = batch_size or max(1, TILE_BATCH_PIXELS // (tile_h * tile_w))

    def cut(y: int, x: int) -> np.ndarray:
        if y + tile_h <= h and x + tile_w <= w:
            return prepare(image[y : y + tile_h, x : x + tile_w])
        return prepare(image[np.ix_(ys[y : y + tile_h], xs[x : x + tile_w])])

    out = band = None  # band: the blended rows [y, y + tile_h) of the current row of tiles
    for r, y in enumerate(rows):
        for start in range(0, len(cols), batch_size):
            chunk = cols[start : start + batch_size]
            pred = model.predict_on_batch(np.stack([cut(y, x) for x in chunk]))
            if band is None:
                band = np.zeros((tile_h, W, pred.shape[-1]), np.float32)
                out = np.empty((h, w, pred.shape[-1]), dtype)
            for x, p in zip(chunk, pred):
                band[:, x : x + tile_w] += p * window
        done = (rows[r + 1] if r + 1 < len(rows) else H) - y  # rows no later tile reaches
        if y < h:
            last = min(y + done, h)
            out[y:last] = band[: last - y, :w] / (weight_y[y:last, None, None] * weight_x[None, :w, None])
        band[: tile_h - done] = band[done:].copy()
        band[tile_h - done :] = 0.0
    return out
