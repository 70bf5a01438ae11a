"""A small synthetic nucleus dataset in Kaggle layout, for tests and smoke runs.

Three image types like DSB2018's: fluorescence (dark background, bright nuclei,
grayscale stored as RGBA like Kaggle), brightfield (light background, dark nuclei,
grayscale RGBA) and histology (pinkish H&E background, purple nuclei, colour RGB).
Sizes vary (96-192 px per side, mostly not square); nuclei are perturbed ellipses of
varied size, a third of them placed against an earlier one so nuclei touch and
overlap; masks stay disjoint by occlusion order (a later nucleus hides an earlier
one). Blur and noise are added. Deterministic in (n_images, seed, GENERATOR_VERSION).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from nuclei_search.errors import DataError

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
IMAGE_TYPES = ("fluorescence", "brightfield", "histology")
_VERTICES = 32


def _nucleus_polygon(rng: np.random.Generator, cy: float, cx: float, a: float, b: float) -> np.ndarray:
    theta = np.linspace(0.0, 2 * np.pi, _VERTICES, endpoint=False)
    radius = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    ks = np.arange(2, 5)[:, None]
    wobble = (rng.uniform(0.0, 0.08, (3, 1)) * np.cos(ks * theta + rng.uniform(0, 2 * np.pi, (3, 1)))).sum(0)
    radius = radius * (1.0 + wobble)
    angle = rng.uniform(0, np.pi)
    x = radius * np.cos(theta)
    y = radius * np.sin(theta)
    xr = x * np.cos(angle) - y * np.sin(angle) + cx
    yr = x * np.sin(angle) + y * np.cos(angle) + cy
    return np.round(np.stack([xr, yr], axis=1) * 4).astype(np.int32)  # 2 bits subpixel


def _draw_labels(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint16 instance map: later nuclei occlude earlier ones; 1..n consecutive."""
    labels = np.zeros((height, width), np.uint16)
    scale = min(height, width) / 128.0
    n = int(rng.integers(6, 20))
    centres: list[tuple[float, float, float]] = []
    for j in range(n):
        a = rng.uniform(4.0, 11.0) * scale
        b = a * rng.uniform(0.6, 1.0)
        if centres and rng.random() < 0.35:  # against an earlier nucleus: touching/overlap
            py, px, pr = centres[int(rng.integers(len(centres)))]
            direction = rng.uniform(0, 2 * np.pi)
            dist = (pr + b) * rng.uniform(0.7, 0.95)
            cy, cx = py + dist * np.sin(direction), px + dist * np.cos(direction)
        else:
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        centres.append((cy, cx, b))
        cv2.fillPoly(labels, [_nucleus_polygon(rng, cy, cx, a, b)], color=j + 1, lineType=cv2.LINE_8, shift=2)
    present, relabelled = np.unique(labels, return_inverse=True)
    counts = np.bincount(relabelled.ravel())
    keep = np.zeros(len(present), np.uint16)
    kept = [i for i in range(1, len(present)) if counts[i] >= 12]  # drop slivers
    keep[kept] = np.arange(1, len(kept) + 1, dtype=np.uint16)
    return keep[relabelled].reshape(height, width)


def _render(rng: np.random.Generator, labels: np.ndarray, kind: str) -> np.ndarray:
    """uint8 image HxWxC in OpenCV channel order (BGRA for gray types, BGR for histology)."""
    height, width = labels.shape
    n = int(labels.max())
    texture = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 2.0)
    fg = labels > 0
    if kind == "histology":
        bg = np.array([rng.uniform(200, 225), rng.uniform(165, 195), rng.uniform(225, 242)])  # B, G, R
        nuclei = np.stack([rng.uniform(140, 190, n + 1), rng.uniform(50, 90, n + 1),
                           rng.uniform(90, 140, n + 1)], axis=1)  # purple, B G R
        image = np.where(fg[..., None], nuclei[labels], bg) + 12.0 * texture[..., None]
        image += 6.0 * cv2.GaussianBlur(rng.normal(0, 1, (height, width, 3)).astype(np.float32), (0, 0), 6.0)
    else:
        if kind == "fluorescence":
            bg, nuclei = rng.uniform(5, 25), rng.uniform(80, 230, n + 1)
        else:  # brightfield
            bg, nuclei = rng.uniform(185, 225), rng.uniform(60, 140, n + 1)
        gray = np.where(fg, nuclei[labels], bg) + 10.0 * texture * fg
        image = np.repeat(gray[..., None], 3, axis=2)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.6, 1.4))
    noise = rng.normal(0, rng.uniform(2.0, 6.0), image.shape[:2]).astype(np.float32)
    image = np.clip(image + noise[..., None], 0, 255).astype(np.uint8)
    if kind == "histology":
        return image
    return np.concatenate([image, np.full((height, width, 1), 255, np.uint8)], axis=2)


def image_kind(index: int) -> str:
    """The image type of synthetic image number `index` (round robin)."""
    return IMAGE_TYPES[index % len(IMAGE_TYPES)]


def _write_one(root: Path, index: int, seed: int) -> None:
    rng = np.random.default_rng([seed, index, GENERATOR_VERSION])
    kind = image_kind(index)
    height, width = (int(v) for v in rng.integers(96, 193, 2))
    labels = _draw_labels(rng, height, width)
    while labels.max() == 0:  # every image needs at least one nucleus
        labels = _draw_labels(rng, height, width)
    image = _render(rng, labels, kind)
    image_id = f"synth{seed}-{index:04d}-{kind[:4]}"
    (root / image_id / "images").mkdir(parents=True)
    (root / image_id / "masks").mkdir()
    _write_png(root / image_id / "images" / f"{image_id}.png", image)
    for k in range(1, int(labels.max()) + 1):
        mask = np.where(labels == k, 255, 0).astype(np.uint8)
        _write_png(root / image_id / "masks" / f"nucleus{k:03d}.png", mask)


def _write_png(path: Path, array: np.ndarray) -> None:
    """Encode, then write: cv2.imwrite only returns False when the write fails (a full disk)."""
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise DataError(f"cannot encode {path} as PNG")
    path.write_bytes(buf.tobytes())  # a full or read-only disk raises OSError here


def generate_dataset(out_dir: str | os.PathLike, n_images: int = 48, seed: int = 0) -> Path:
    """Write `n_images` synthetic images + masks in Kaggle layout to `out_dir` (atomically).

    The dataset is built in a temporary sibling folder and renamed into place, so a
    crash never leaves half a dataset. `out_dir` must not exist yet (or be empty).
    """
    out = Path(out_dir)
    if n_images < 1:
        raise DataError(f"synthetic dataset needs at least one image (got {n_images})")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} already exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for index in range(n_images):
            _write_one(tmp, index, seed)
        try:
            if out.exists():
                out.rmdir()  # empty when checked above; another process may have won since
            tmp.rename(out)
        except OSError:
            if not (out.is_dir() and any(out.iterdir())):  # not a lost race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d synthetic images to %s", n_images, out)
    return out
