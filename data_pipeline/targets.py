"""Training targets computed from nucleus masks: instance labels, semantic mask,
instance contours and the touching borders between nuclei.

All functions are vectorised numpy/OpenCV; only `labels_from_masks` loops, once per
instance.
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

_EMPTY = np.iinfo(np.uint16).max


def labels_from_masks(masks: Iterable[np.ndarray], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Instance map uint16 HxW: mask i (0-based) becomes label i+1; later masks win overlaps.

    `masks` is an iterable of HxW arrays (any non-zero is foreground) or an NxHxW array.
    """
    labels: np.ndarray | None = None if shape is None else np.zeros(shape, np.uint16)
    count = 0
    for count, mask in enumerate(masks, start=1):
        if labels is None:
            labels = np.zeros(np.shape(mask)[:2], np.uint16)
        if count > _EMPTY - 1:
            raise ValueError("more than 65534 instances do not fit a uint16 label map")
        labels[np.asarray(mask) > 0] = count
    if labels is None:
        raise ValueError("labels_from_masks needs at least one mask or a shape")
    return labels


def semantic_mask(labels: np.ndarray) -> np.ndarray:
    """uint8 HxW: 1 on any nucleus, 0 on background."""
    return (np.asarray(labels) > 0).astype(np.uint8)


def _kernel(radius: int) -> np.ndarray:
    return np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)


def boundary_map(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """uint8 HxW: 1 on nucleus pixels within `width` px of another label or background.

    These are the inner contours of every instance, including the line where two
    nuclei touch, so a model can learn to separate touching nuclei. Pixels at the
    image border are not contours unless their instance ends there.
    """
    labels = np.asarray(labels).astype(np.uint16, copy=False)
    kernel = _kernel(width)
    grown = cv2.dilate(labels, kernel, borderType=cv2.BORDER_REPLICATE)
    shrunk = cv2.erode(labels, kernel, borderType=cv2.BORDER_REPLICATE)
    return ((labels > 0) & ((grown != labels) | (shrunk != labels))).astype(np.uint8)


def touching_borders(labels: np.ndarray, radius: int = 2) -> np.ndarray:
    """uint8 HxW: 1 on pixels whose (2r+1)² neighbourhood holds two different nuclei.

    The classic DSB2018 trick: these are the background gaps and contour pixels
    between touching (or nearly touching, within ~2r px) nuclei, worth separating
    or weighting; isolated nuclei contribute nothing.
    """
    labels = np.asarray(labels).astype(np.uint16, copy=False)
    kernel = _kernel(radius)
    highest = cv2.dilate(labels, kernel, borderType=cv2.BORDER_REPLICATE)
    background_high = np.where(labels > 0, labels, _EMPTY).astype(np.uint16)
    lowest = cv2.erode(background_high, kernel, borderType=cv2.BORDER_REPLICATE)
    return ((highest > 0) & (lowest != _EMPTY) & (highest != lowest)).astype(np.uint8)
