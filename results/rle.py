"""Kaggle DSB2018 run-length encoding.

Pixels are numbered from 1, top to bottom, then left to right (column-major, Fortran
order): pixel (row r, column c) of an H×W image is number ``c * H + r + 1``. A mask
is written as space-separated ``start length`` pairs of its runs, in increasing
order, e.g. ``"1 3 10 5"``. An empty mask is the empty string.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from nuclei_search.errors import DataError


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D boolean (or 0/non-zero) mask as Kaggle RLE."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a 2-D mask, got shape {mask.shape}")
    pixels = np.concatenate([[0], mask.ravel(order="F") != 0, [0]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(pixels))  # 0-based run starts and ends (exclusive)
    starts, ends = edges[0::2], edges[1::2]
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts
    return " ".join(map(str, pairs.tolist()))


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode Kaggle RLE into a boolean mask of `shape` (H, W); DataError if it does not fit."""
    height, width = int(shape[0]), int(shape[1])
    flat = np.zeros(height * width, dtype=bool)
    text = (rle or "").strip()
    if not text:
        return flat.reshape((height, width), order="F")
    try:
        numbers = np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise DataError(f"RLE is not a list of integers: {text[:60]!r}") from None
    if len(numbers) % 2:
        raise DataError(f"RLE has an odd count of numbers ({len(numbers)}): expected start/length pairs")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if (starts < 0).any() or (lengths < 1).any() or (starts + lengths > flat.size).any():
        raise DataError(f"RLE runs fall outside a {height}x{width} image (or have a length < 1)")
    for start, length in zip(starts.tolist(), lengths.tolist()):
        flat[start:start + length] = True
    return flat.reshape((height, width), order="F")


def _runs(indices: np.ndarray) -> str:
    """RLE of sorted 0-based flat (column-major) pixel indices."""
    breaks = np.flatnonzero(np.diff(indices) != 1)
    starts = np.concatenate([[indices[0]], indices[breaks + 1]])
    ends = np.concatenate([indices[breaks], [indices[-1]]])
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts + 1
    return " ".join(map(str, pairs.tolist()))


def instance_rles(labels: np.ndarray) -> Iterator[tuple[int, str]]:
    """(label, RLE) of every instance 1..max of a label map, in label order (skips absent labels).

    Each instance is encoded from its bounding box only, so thousands of small
    instances in a large image cost about one pass over the image.
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"instance_rles expects a 2-D label map, got shape {labels.shape}")
    height = labels.shape[0]
    for index, box in enumerate(ndi.find_objects(labels.astype(np.int64, copy=False)), start=1):
        if box is None:
            continue
        rows, cols = np.nonzero(labels[box] == index)
        flat = np.sort((cols + box[1].start) * height + rows + box[0].start)
        yield index, _runs(flat)


def submission_rows(image_id: str, labels: np.ndarray) -> list[tuple[str, str]]:
    """Rows (ImageId, EncodedPixels) for one image: one per instance, or one empty row if none.

    The instances of a label map never overlap, as the Kaggle format requires.
    """
    rows = [(image_id, rle) for _, rle in instance_rles(labels)]
    return rows or [(image_id, "")]
