"""Whole-image inference with a fully convolutional U-Net.

Images keep their size and aspect ratio: each is padded (reflect) up to a multiple of
the network's stride, predicted, and cropped back. Images of the same shape are
predicted together, in batches bounded by a pixel budget. Very large images are cut
into overlapping tiles whose predictions are blended with a smooth window, so memory
stays bounded at any size.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

#: Pixels predicted in one batch (e.g. 16 images of 512x512); bounds memory.
PIXEL_BUDGET = 4_194_304


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

    `multiple` is the network's stride (2**decoder_depth). With `tile` set, images
    larger than the tile are predicted tile by tile (see `predict_tiled`).
    """
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
            pred = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
            for j, i in enumerate(chunk):
                out[i] = pred[j, :h, :w]
    return out  # type: ignore[return-value]


def _window(size: int) -> np.ndarray:
    """A 2-D blending window that is ~1 inside and falls smoothly to a small value at the edges."""
    ramp = np.minimum(np.arange(size) + 1, np.arange(size)[::-1] + 1).astype(np.float32)
    ramp = np.clip(ramp / max(1, size // 4), 1e-3, 1.0)
    return np.outer(ramp, ramp)[..., None]


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` covering [0, length) with at least `overlap` shared."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def predict_tiled(model, image: np.ndarray, tile: int, multiple: int, overlap: int | None = None,
                  batch_size: int = 8) -> np.ndarray:
    """Predict a large image with overlapping `tile`×`tile` windows blended smoothly."""
    if tile % multiple:
        raise ValueError(f"tile {tile} must be a multiple of the network stride {multiple}")
    overlap = tile // 4 if overlap is None else overlap
    padded, (h, w) = _pad_to_multiple(image, multiple)
    if padded.shape[0] < tile or padded.shape[1] < tile:
        ph, pw = max(0, tile - padded.shape[0]), max(0, tile - padded.shape[1])
        padded = np.pad(padded, ((0, ph), (0, pw), (0, 0)))
    H, W = padded.shape[:2]
    window = _window(tile)
    acc = None
    weight = np.zeros((H, W, 1), np.float32)
    coords = [(y, x) for y in tile_origins(H, tile, overlap) for x in tile_origins(W, tile, overlap)]
    for start in range(0, len(coords), batch_size):
        chunk = coords[start : start + batch_size]
        batch = np.stack([padded[y : y + tile, x : x + tile] for y, x in chunk])
        pred = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
        if acc is None:
            acc = np.zeros((H, W, pred.shape[-1]), np.float32)
        for (y, x), p in zip(chunk, pred):
            acc[y : y + tile, x : x + tile] += p * window
            weight[y : y + tile, x : x + tile] += window
    return (acc / weight)[:h, :w]

