"""Postprocessing chosen on validation (nnU-Net's "determine postprocessing" idea).

`choose_postprocessing(probs, labels, method)` searches the probability threshold, the
smallest nucleus kept and the watershed marker parameter (`h` without a contour channel,
the contour threshold with one) for the highest mean Kaggle mAP over the validation
images. It is a coordinate search over small fixed grids, starting from the training
defaults, two sweeps, ties kept at the current value: deterministic, and about a
hundred instance segmentations of the validation set at most (each setting is scored
once). Only ever call it with validation (never training) predictions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from nuclei_search.models.evaluation import score_predictions
from nuclei_search.models.postprocess import Postprocess

log = logging.getLogger(__name__)

GRIDS = {
    "threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "h": (0.5, 1.0, 2.0, 3.0, 4.0),
    "boundary_threshold": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    "min_size": (0, 5, 10, 20, 40),
}
SWEEPS = 2


@dataclass
class PostprocessChoice:
    chosen: Postprocess
    default: Postprocess
    val_map: float  # mean mAP of the chosen settings
    val_map_default: float  # ... of the training defaults
    evaluations: int
    trace: list[dict] = field(default_factory=list)  # every setting scored, in order

    def card(self, n_images: int) -> dict:
        """The model card's `postprocess` section."""
        return {**self.chosen.to_dict(), "chosen_on": f"validation split ({n_images} images)",
                "objective": "mean Kaggle mAP@[0.5:0.95]", "val_map": self.val_map,
                "val_map_default": self.val_map_default, "default": self.default.to_dict(),
                "grids": {k: list(v) for k, v in GRIDS.items()}, "evaluations": self.evaluations}


def searched_parameters(method: str, boundary: bool) -> tuple[str, ...]:
    """The postprocessing parameters that matter for an instance method and output."""
    if method == "cc":
        return ("threshold", "min_size")
    return ("threshold", "boundary_threshold" if boundary else "h", "min_size")


def choose_postprocessing(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], method: str,
                          default: Postprocess | None = None) -> PostprocessChoice:
    """The postprocessing with the best validation mAP (see module doc)."""
    default = default or Postprocess()
    boundary = bool(probs) and probs[0].shape[-1] > 1
    names = searched_parameters(method, boundary)
    scores: dict[Postprocess, float] = {}
    trace: list[dict] = []

    def score(setting: Postprocess) -> float:
        if setting not in scores:
            result = score_predictions(probs, labels, setting.threshold, method, with_map=True,
                                       postprocess=setting.instance_kwargs())
            scores[setting] = float(result.map)
            trace.append({**setting.to_dict(), "val_map": scores[setting], "val_iou": float(result.iou)})
        return scores[setting]

    current = default
    best = score(current)
    for sweep in range(SWEEPS):
        changed = False
        for name in names:
            for value in GRIDS[name]:
                candidate = replace(current, **{name: value})
                value_score = score(candidate)
                if value_score > best + 1e-9:
                    current, best, changed = candidate, value_score, True
        log.info("postprocessing sweep %d: %s (val mAP %.4f)", sweep + 1, current, best)
        if not changed:
            break
    return PostprocessChoice(chosen=current, default=default, val_map=best, val_map_default=scores[default],
                             evaluations=len(scores), trace=trace)
