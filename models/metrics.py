"""Segmentation metrics.

Keras (training): ``ForegroundIoU`` and ``DiceScore`` threshold channel 0 (the
nucleus mask) of prediction and target at ``threshold`` and accumulate intersection
and union over all pixels seen in the epoch (pixel-global IoU, not a mean of
per-batch values). An epoch with no foreground at all in either scores 1.0.

NumPy (evaluation): ``foreground_iou``, ``dice``, ``PixelIoUAccumulator`` (IoU of all
nucleus pixels of a split), and the Kaggle DSB2018 instance metric ``kaggle_ap`` /
``kaggle_map``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import keras
import numpy as np
from keras import ops

KAGGLE_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)  # 0.50, 0.55, ..., 0.95


# ----------------------------------------------------------------------------- Keras
class _OverlapMetric(keras.metrics.Metric):
    """Accumulates intersection, union and |pred| + |true| of channel 0 masks."""

    def __init__(self, threshold: float = 0.5, name: str | None = None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = float(threshold)
        self.intersection = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="intersection")
        self.union = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="union")
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        if len(y_true.shape) == 4:
            y_true = y_true[..., 0]
        if len(y_pred.shape) == 4:
            y_pred = y_pred[..., 0]
        t = ops.cast(ops.cast(y_true, "float32") > 0.5, "float32")
        p = ops.cast(ops.cast(y_pred, "float32") > self.threshold, "float32")
        if sample_weight is not None:
            w = ops.cast(sample_weight, "float32")
            while len(w.shape) < len(t.shape):
                w = ops.expand_dims(w, -1)
            w = ops.broadcast_to(w, ops.shape(t))
        else:
            w = ops.ones_like(t)
        inter = ops.sum(t * p * w)
        total = ops.sum((t + p) * w)
        self.intersection.assign_add(inter)
        self.total.assign_add(total)
        self.union.assign_add(total - inter)

    def reset_state(self):
        for v in (self.intersection, self.union, self.total):
            v.assign(ops.zeros(v.shape, dtype=v.dtype))  # not zeros_like(v): JAX cannot read a Variable's dtype

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="nuclei_search")
class ForegroundIoU(_OverlapMetric):
    """Pixel-global IoU of the thresholded nucleus mask (channel 0) over an epoch."""

    def __init__(self, threshold: float = 0.5, name: str = "foreground_iou", dtype=None):
        super().__init__(threshold=threshold, name=name, dtype=dtype)

    def result(self):
        return ops.where(self.union > 0, self.intersection / ops.maximum(self.union, 1.0), 1.0)


@keras.saving.register_keras_serializable(package="nuclei_search")
class DiceScore(_OverlapMetric):
    """Pixel-global Dice (F1) of the thresholded nucleus mask (channel 0) over an epoch."""

    def __init__(self, threshold: float = 0.5, name: str = "dice_score", dtype=None):
        super().__init__(threshold=threshold, name=name, dtype=dtype)

    def result(self):
        return ops.where(self.total > 0, 2.0 * self.intersection / ops.maximum(self.total, 1.0), 1.0)


def keras_metrics(threshold: float = 0.5) -> list[keras.metrics.Metric]:
    """Fresh ``[ForegroundIoU, DiceScore]`` for ``model.compile(metrics=...)``, named as the
    training history reports them (``iou``, ``dice``; ``val_`` is validation's prefix)."""
    return [ForegroundIoU(threshold=threshold, name="iou"), DiceScore(threshold=threshold, name="dice")]


# ----------------------------------------------------------------------------- NumPy
def _binary(mask: np.ndarray, threshold: float | None) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (1, 2):
        mask = mask[..., 0]
    if mask.dtype == bool:
        return mask
    if threshold is None:
        return mask > 0
    return mask > threshold


def overlap_counts(pred_mask, true_mask, threshold: float | None = None) -> tuple[int, int, int]:
    """(intersection, union, |pred| + |true|) of two binary masks.

    Boolean masks are used as is; others are thresholded at ``threshold`` (> 0 when
    None, so label maps work too). A trailing channel axis keeps channel 0.
    """
    p = _binary(pred_mask, threshold)
    t = _binary(true_mask, threshold)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: prediction {p.shape}, truth {t.shape}")
    inter = int(np.count_nonzero(p & t))
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    return inter, total - inter, total


def foreground_iou(pred_mask, true_mask, threshold: float | None = None) -> float:
    """IoU of the foreground of two masks; both empty → 1.0."""
    inter, union, _ = overlap_counts(pred_mask, true_mask, threshold)
    return 1.0 if union == 0 else inter / union


def dice(pred_mask, true_mask, threshold: float | None = None) -> float:
    """Dice of the foreground of two masks; both empty → 1.0."""
    inter, _, total = overlap_counts(pred_mask, true_mask, threshold)
    return 1.0 if total == 0 else 2.0 * inter / total


class PixelIoUAccumulator:
    """IoU / Dice of all nucleus pixels of a split: Σ intersections / Σ unions."""

    def __init__(self, threshold: float | None = None):
        self.threshold = threshold
        self.intersection = 0
        self.union = 0
        self.total = 0
        self.images = 0

    def update(self, pred_mask, true_mask) -> "PixelIoUAccumulator":
        inter, union, total = overlap_counts(pred_mask, true_mask, self.threshold)
        self.intersection += inter
        self.union += union
        self.total += total
        self.images += 1
        return self

    @property
    def iou(self) -> float:
        return 1.0 if self.union == 0 else self.intersection / self.union

    @property
    def dice(self) -> float:
        return 1.0 if self.total == 0 else 2.0 * self.intersection / self.total

    def result(self) -> dict[str, float]:
        return {"iou": self.iou, "dice": self.dice, "images": self.images}


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels → consecutive 0..n (0 stays background), n = number of instances."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    uniq, inverse = np.unique(labels.ravel(), return_inverse=True)
    if uniq[0] != 0:  # no background pixel: shift so 0 means "none"
        inverse = inverse + 1
        n = len(uniq)
    else:
        n = len(uniq) - 1
    return inverse.reshape(labels.shape), n


def instance_iou_matrix(true_labels: np.ndarray, pred_labels: np.ndarray) -> np.ndarray:
    """IoU of every (true instance, predicted instance) pair, shape (n_true, n_pred).

    One bincount over the label pairs gives all intersections at once.
    """
    t, n_t = _relabel(true_labels)
    p, n_p = _relabel(pred_labels)
    if t.shape != p.shape:
        raise ValueError(f"label map shapes differ: truth {t.shape}, prediction {p.shape}")
    pairs = np.bincount((t.ravel().astype(np.int64) * (n_p + 1) + p.ravel()), minlength=(n_t + 1) * (n_p + 1))
    pairs = pairs.reshape(n_t + 1, n_p + 1)
    area_t = pairs.sum(axis=1)[1:]
    area_p = pairs.sum(axis=0)[1:]
    inter = pairs[1:, 1:].astype(np.float64)
    union = area_t[:, None] + area_p[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def kaggle_ap(true_labels: np.ndarray, pred_labels: np.ndarray,
              thresholds: Sequence[float] = KAGGLE_THRESHOLDS) -> float:
    """Kaggle DSB2018 score of one image.

    For each IoU threshold t in 0.50:0.95:0.05 a predicted instance matches a true one
    when IoU > t (at t ≥ 0.5 a match is unique); precision(t) = TP / (TP + FP + FN);
    the score is the mean over thresholds. Both empty → 1.0, one empty → 0.0.
    """
    iou = instance_iou_matrix(true_labels, pred_labels)
    n_true, n_pred = iou.shape
    if n_true == 0 and n_pred == 0:
        return 1.0
    if n_true == 0 or n_pred == 0:
        return 0.0
    scores = []
    for t in thresholds:
        matches = iou > t
        tp = int(np.count_nonzero(matches.any(axis=1)))
        fp = n_pred - int(np.count_nonzero(matches.any(axis=0)))
        fn = n_true - tp
        scores.append(tp / (tp + fp + fn))
    return float(np.mean(scores))


def kaggle_map(list_true: Iterable[np.ndarray], list_pred: Iterable[np.ndarray]) -> float:
    """Mean of ``kaggle_ap`` over images (the competition's leaderboard score)."""
    scores = [kaggle_ap(t, p) for t, p in zip(list_true, list_pred, strict=True)]
    if not scores:
        raise ValueError("kaggle_map needs at least one image")
    return float(np.mean(scores))
