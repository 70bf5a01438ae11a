"""Score a model on whole labelled images: foreground IoU, Dice and the Kaggle mAP.

The same function serves validation at every epoch (models.train), the export check
(results.export) and `nuclei-search evaluate`, so the three always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from nuclei_search.models.inference import predict_images
from nuclei_search.models.metrics import kaggle_ap
from nuclei_search.models.postprocess import instances_from_prediction


TYPE_METRICS = ("iou", "dice", "map")  # scored by image type as well


@dataclass
class EvaluationResult:
    iou: float  # intersection over union of all nucleus pixels of the set
    dice: float  # Dice of all nucleus pixels of the set
    map: float  # Kaggle mAP@[0.5:0.95:0.05], mean over images
    iou_per_image: float  # mean of the per-image foreground IoU
    per_image: list[dict] = field(default_factory=list)
    #: image type (fluorescence / brightfield / histology) -> {"iou", "dice", "map", "n"}, when types are known
    by_type: dict[str, dict] = field(default_factory=dict)

    def as_metrics(self, prefix: str = "val_") -> dict[str, float]:
        """Flat metrics: `val_iou`, `val_dice`, `val_map`, `val_iou_per_image`, and per image type
        `val_iou_<type>`, `val_dice_<type>`, `val_map_<type>` (so a search cannot win on one type alone)."""
        metrics = {
            f"{prefix}iou": self.iou,
            f"{prefix}dice": self.dice,
            f"{prefix}map": self.map,
            f"{prefix}iou_per_image": self.iou_per_image,
        }
        for kind, scores in sorted(self.by_type.items()):
            for name in TYPE_METRICS:
                metrics[f"{prefix}{name}_{kind}"] = scores[name]
        return metrics


def type_metrics(row: dict) -> dict:
    """The per-image-type validation metrics of a metrics row (`val_iou_histology`, ...)."""
    from nuclei_search.data_pipeline.preprocess import IMAGE_TYPES

    names = {f"val_{m}_{t}" for m in TYPE_METRICS for t in IMAGE_TYPES}
    return {k: v for k, v in row.items() if k in names}


def _safe_ratio(num: float, den: float) -> float:
    return float(num / den) if den else 1.0


def score_predictions(
    probs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    threshold: float = 0.5,
    instance_method: str = "watershed",
    ids: Sequence[str] | None = None,
    with_map: bool = True,
    types: Sequence[str] | None = None,
    postprocess: dict | None = None,
) -> EvaluationResult:
    """Score probability maps (HxWxC, channel 0 = nucleus, 1 = boundary) against label maps.

    `types` (one image type per map) adds scores by image type; `postprocess` holds extra
    keyword arguments of `instances_from_prediction` (min_size, h, boundary_threshold)."""
    inter_sum = union_sum = pred_sum = true_sum = 0
    rows = []
    sums: dict[str, list[int]] = {}
    for k, (prob, lab) in enumerate(zip(probs, labels)):
        pred = prob[..., 0] > threshold
        true = lab > 0
        inter = int(np.count_nonzero(pred & true))
        union = int(np.count_nonzero(pred | true))
        n_pred, n_true = int(np.count_nonzero(pred)), int(np.count_nonzero(true))
        inter_sum, union_sum = inter_sum + inter, union_sum + union
        pred_sum, true_sum = pred_sum + n_pred, true_sum + n_true
        if types is not None:
            acc = sums.setdefault(types[k], [0, 0, 0, 0])
            for j, value in enumerate((inter, union, n_pred, n_true)):
                acc[j] += value
        row = {
            "id": ids[k] if ids is not None else str(k),
            "iou": _safe_ratio(inter, union),
            "dice": _safe_ratio(2 * inter, n_pred + n_true),
        }
        if with_map:
            boundary = prob[..., 1] if prob.shape[-1] > 1 else None
            instances = instances_from_prediction(
                prob[..., 0], threshold=threshold, boundary=boundary, method=instance_method, **(postprocess or {})
            )
            row["map"] = float(kaggle_ap(lab, instances))
            row["n_true"] = int(lab.max()) if lab.size else 0
            row["n_pred"] = int(instances.max()) if instances.size else 0
        if types is not None:
            row["type"] = types[k]
        rows.append(row)
    by_type = {}
    for kind, (inter, union, n_pred, n_true) in sums.items():
        maps = [r["map"] for r in rows if r.get("type") == kind and "map" in r]
        by_type[kind] = {"iou": _safe_ratio(inter, union), "dice": _safe_ratio(2 * inter, n_pred + n_true),
                         "map": float(np.mean(maps)) if maps else float("nan"),
                         "n": sum(1 for r in rows if r.get("type") == kind)}
    return EvaluationResult(
        iou=_safe_ratio(inter_sum, union_sum),
        dice=_safe_ratio(2 * inter_sum, pred_sum + true_sum),
        map=float(np.mean([r["map"] for r in rows])) if with_map and rows else float("nan"),
        iou_per_image=float(np.mean([r["iou"] for r in rows])) if rows else float("nan"),
        per_image=rows,
        by_type=by_type,
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
    types: Sequence[str] | None = None,
    postprocess: dict | None = None,
) -> EvaluationResult:
    """Predict whole normalised images (no resizing) and score them."""
    probs = predict_images(model, images, multiple=multiple, tile=tile)
    return score_predictions(probs, labels, threshold, instance_method, ids, types=types, postprocess=postprocess)
