"""Score a model on whole labelled images: foreground IoU, Dice and the Kaggle mAP.

The same function serves validation at every epoch (models.train), the export check
(results.export) and `nuclei-search evaluate`, so the three always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from models.inference import predict_images
from models.metrics import kaggle_ap
from models.postprocess import instances_from_prediction


@dataclass
class EvaluationResult:
    iou: float  # intersection over union of all nucleus pixels of the set
    dice: float  # Dice of all nucleus pixels of the set
    map: float  # Kaggle mAP@[0.5:0.95:0.05], mean over images
    iou_per_image: float  # mean of the per-image foreground IoU
    per_image: list[dict] = field(default_factory=list)

    def as_metrics(self, prefix: str = "val_") -> dict[str, float]:
        return {
            f"{prefix}iou": self.iou,
            f"{prefix}dice": self.dice,
            f"{prefix}map": self.map,
            f"{prefix}iou_per_image": self.iou_per_image,
        }


def _safe_ratio(num: float, den: float) -> float:
    return float(num / den) if den else 1.0


def score_predictions(
    probs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    threshold: float = 0.5,
    instance_method: str = "watershed",
    ids: Sequence[str] | None = None,
    with_map: bool = True,
) -> EvaluationResult:
    """Score probability maps (HxWxC, channel 0 = nucleus, 1 = boundary) against label maps."""
    inter_sum = union_sum = pred_sum = true_sum = 0
    rows = []
    for k, (prob, lab) in enumerate(zip(probs, labels)):
        pred = prob[..., 0] > threshold
        true = lab > 0
        inter = int(np.count_nonzero(pred & true))
        union = int(np.count_nonzero(pred | true))
        n_pred, n_true = int(np.count_nonzero(pred)), int(np.count_nonzero(true))
        inter_sum, union_sum = inter_sum + inter, union_sum + union
        pred_sum, true_sum = pred_sum + n_pred, true_sum + n_true
        row = {
            "id": ids[k] if ids is not None else str(k),
            "iou": _safe_ratio(inter, union),
            "dice": _safe_ratio(2 * inter, n_pred + n_true),
        }
        if with_map:
            boundary = prob[..., 1] if prob.shape[-1] > 1 else None
            instances = instances_from_prediction(
                prob[..., 0], threshold=threshold, boundary=boundary, method=instance_method
            )
            row["map"] = float(kaggle_ap(lab, instances))
            row["n_true"] = int(lab.max()) if lab.size else 0
            row["n_pred"] = int(instances.max()) if instances.size else 0
        rows.append(row)
    return EvaluationResult(
        iou=_safe_ratio(inter_sum, union_sum),
        dice=_safe_ratio(2 * inter_sum, pred_sum + true_sum),
        map=float(np.mean([r["map"] for r in rows])) if with_map and rows else float("nan"),
        iou_per_image=float(np.mean([r["iou"] for r in rows])) if rows else float("nan"),
        per_image=rows,
    )


def evaluate_model(
    model,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    multiple: int,
    threshold: float = 0.5,
    instance_method: str = "watershed",
    ids: Sequence[str] | None = None,
    tile: int | None = None,
) -> EvaluationResult:
    """Predict whole normalised images (no resizing) and score them."""
    probs = predict_images(model, images, multiple=multiple, tile=tile)
    return score_predictions(probs, labels, threshold, instance_method, ids)
