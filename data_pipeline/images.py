"""Decoding Kaggle PNGs into the arrays the pipeline uses.

Images become uint8 HxWx3 RGB: RGBA drops alpha, grayscale is repeated to three
channels, 16-bit images are stretched so their maximum maps to 255. Masks become
boolean HxW (any non-zero pixel is foreground). Every failure is a DataError naming
the file.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from nuclei_search.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode(data: bytes, name: str) -> np.ndarray:
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        array = None
    if array is None or array.size == 0:
        raise DataError(f"corrupt PNG {name}: cannot be decoded")
    return array


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Bring any integer/float image to uint8 (16-bit: maximum maps to 255)."""
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float32)
    top = float(values.max()) if values.size else 0.0
    if array.dtype == np.uint16 or top > 255.0:
        scale = 255.0 / top if top > 0 else 0.0
        values = values * scale
    elif np.issubdtype(array.dtype, np.floating) and top <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def to_rgb(array: np.ndarray) -> np.ndarray:
    """OpenCV's decoded array (gray, BGR, BGRA) → uint8 RGB HxWx3 (a uint8 BGR array is
    converted in place: pass a copy to keep it)."""
    array = to_uint8(array)
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    channels = array.shape[2]
    if channels == 1:
        return np.repeat(array, 3, axis=2)
    if channels == 2:  # gray + alpha
        return np.repeat(array[:, :, :1], 3, axis=2)
    if channels == 3:  # in place: the decoded array is ours, and a huge image is not held twice
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB, dst=array if array.flags.c_contiguous else None)
    return cv2.cvtColor(array[:, :, :4], cv2.COLOR_BGRA2RGB)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """PNG bytes → uint8 RGB HxWx3; DataError naming `name` if corrupt."""
    return np.ascontiguousarray(to_rgb(_decode(data, name)))


def decode_mask(data: bytes, name: str, shape: tuple[int, int] | None = None,
                image_name: str | None = None) -> np.ndarray:
    """PNG bytes → bool HxW; DataError if corrupt or its size differs from `shape`."""
    array = _decode(data, name)
    if array.ndim == 3:
        array = array.max(axis=2)
    if shape is not None and tuple(array.shape[:2]) != tuple(shape):
        mh, mw = array.shape[:2]
        h, w = shape
        of = f" of {image_name}" if image_name else ""
        raise DataError(
            f"mask {name} is {mh}x{mw} (HxW) but its image{of} is {h}x{w}"
        )
    return array > 0


def png_size(header: bytes, name: str) -> tuple[int, int]:
    """(height, width) from the first 24 bytes of a PNG (IHDR), without decoding."""
    if len(header) < 24 or header[:8] != PNG_SIGNATURE or header[12:16] != b"IHDR":
        raise DataError(f"corrupt PNG {name}: no PNG header")
    width, height = struct.unpack(">II", header[16:24])
    return int(height), int(width)
