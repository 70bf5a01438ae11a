"""Ensembles built from a search's trials, chosen on the validation split.

`select_members` takes the search's best checkpoints (one per trial, best val_iou
first), predicts the validation images with each (at its own stride, as training
validated it) and picks the members:

* a number K: the top K trials, equal weights;
* ``auto``: ensemble selection (Caruana et al. 2004, as auto-sklearn builds its
  ensembles): start empty, and at each round add the candidate, with replacement, whose
  addition gives the highest validation foreground IoU of the averaged probabilities;
  the members are the best prefix of that sequence, each weighted by how often it was
  picked. Ties go to the better-ranked candidate, so the choice is deterministic.

The averaged validation probabilities come back with the members, so postprocessing
can be chosen on them without predicting again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from nuclei_search.config import TrialConfig
from nuclei_search.errors import ConfigError, ExperimentError
from nuclei_search.models.inference import predict_images
from nuclei_search.results.trials import METRIC, Experiment, TrialRecord

log = logging.getLogger(__name__)

DEFAULT_POOL = 8  # candidates for `auto`: the best trials of the search
DEFAULT_ROUNDS = 12  # greedy rounds for `auto`
SELECTION_THRESHOLD = 0.5


@dataclass
class Candidate:
    trial: TrialRecord
    config: TrialConfig
    probs: list[np.ndarray] = field(repr=False)  # validation probability maps (HxWxC)
    val_iou: float = 0.0  # its own, as predicted here


@dataclass
class Selection:
    members: list[Candidate]
    weights: list[int]  # times each member was picked (equal 1s for top-K)
    method: str  # "top-K" | "greedy (Caruana et al. 2004)"
    val_iou: float  # of the weighted mean, at threshold 0.5
    trace: list[dict] = field(default_factory=list)  # greedy: each round's pick and score

    def mean_probs(self) -> list[np.ndarray]:
        return weighted_mean([m.probs for m in self.members], self.weights)


def parse_size(value: str | int) -> int | None:
    """`--ensemble K` or `auto` (None)."""
    if isinstance(value, int) or str(value).isdigit():
        size = int(value)
        if size < 1:
            raise ConfigError(f"--ensemble must be a positive number of members or 'auto' (got {value})")
        return size
    if str(value) == "auto":
        return None
    raise ConfigError(f"--ensemble must be a positive number of members or 'auto' (got {value!r})")


def ranked_trials(experiment: Experiment) -> list[TrialRecord]:
    """Trials with a kept best-epoch checkpoint, best val_iou first (ties: trial id)."""
    scored = [t for t in experiment.trials if t.best is not None and t.best_checkpoint is not None
              and t.config is not None]
    return sorted(scored, key=lambda t: (-float(t.best[METRIC]), t.trial_id))


def check_same_split(trials: Sequence[TrialRecord]) -> TrialConfig:
    """All candidates must be validated on the same images; returns the first one's config."""
    configs = [t.trial_config() for t in trials]
    keys = {(c.data, c.val_fraction, c.split_seed) for c in configs}
    if len(keys) > 1:
        raise ExperimentError(f"the trials were validated on different data or splits {sorted(keys)}: "
                              "an ensemble needs one validation split")
    return configs[0]


def _fg_counts(mean: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    pred = mean[..., 0] > SELECTION_THRESHOLD
    return int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred | truth))


def pooled_iou(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float:
    inter = union = 0
    for p, t in zip(probs, truths):
        i, u = _fg_counts(p, t)
        inter, union = inter + i, union + u
    return inter / union if union else 1.0


def weighted_mean(member_probs: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> list[np.ndarray]:
    """Per image, the weighted mean of the members' maps over the channels they all have."""
    channels = 2 if min(p[0].shape[-1] for p in member_probs) >= 2 else 1
    total = float(sum(weights))
    out = []
    for k in range(len(member_probs[0])):
        acc = np.zeros(member_probs[0][k].shape[:2] + (channels,), np.float32)
        for probs, w in zip(member_probs, weights):
            if w:
                acc += np.float32(w) * probs[k][..., :channels]
        out.append(acc / np.float32(total))
    return out


def greedy_selection(candidates: Sequence[Candidate], labels: Sequence[np.ndarray],
                     rounds: int = DEFAULT_ROUNDS) -> Selection:
    """Caruana et al.'s forward selection with replacement on validation foreground IoU."""
    truths = [lab > 0 for lab in labels]
    counts = [0] * len(candidates)
    sums = [np.zeros(lab.shape + (1,), np.float32) for lab in labels]
    best_counts, best_score, trace = None, -1.0, []
    for round_ in range(1, rounds + 1):
        scores = []
        for c in candidates:
            inter = union = 0
            for k, truth in enumerate(truths):
                i, u = _fg_counts((sums[k] + c.probs[k][..., :1]) / np.float32(round_), truth)
                inter, union = inter + i, union + u
            scores.append(inter / union if union else 1.0)
        pick = int(np.argmax(scores))  # first maximum: the better-ranked candidate
        counts[pick] += 1
        for k in range(len(sums)):
            sums[k] += candidates[pick].probs[k][..., :1]
        trace.append({"round": round_, "added": candidates[pick].trial.trial_id, "val_iou": scores[pick]})
        if scores[pick] > best_score + 1e-12:
            best_score, best_counts = scores[pick], list(counts)
    chosen = [i for i, n in enumerate(best_counts) if n]
    return Selection(members=[candidates[i] for i in chosen], weights=[best_counts[i] for i in chosen],
                     method="greedy forward selection with replacement (Caruana et al. 2004)",
                     val_iou=best_score, trace=trace)


def top_k_selection(candidates: Sequence[Candidate], labels: Sequence[np.ndarray], k: int) -> Selection:
    members = list(candidates[:k])
    weights = [1] * len(members)
    score = pooled_iou(weighted_mean([m.probs for m in members], weights), [lab > 0 for lab in labels])
    return Selection(members=members, weights=weights, method=f"top-{len(members)} by val_iou", val_iou=score)


def select_members(experiment: Experiment, size: int | None, val_images: Sequence[np.ndarray],
                   labels: Sequence[np.ndarray], *, pool: int = DEFAULT_POOL, rounds: int = DEFAULT_ROUNDS,
                   load_model=None) -> Selection:
    """Predict the candidates on validation and choose members (`size` K, or None for greedy)."""
    import keras

    from nuclei_search.models.unet import load_unet, pad_multiple

    ranked = ranked_trials(experiment)
    if not ranked:
        raise ExperimentError(f"experiment {experiment.name} has no trial with a checkpoint of its best epoch yet")
    wanted = size if size is not None else pool
    if size is not None and size > len(ranked):
        raise ConfigError(f"--ensemble {size}: experiment {experiment.name} has only {len(ranked)} trial(s) "
                          "with a best-epoch checkpoint")
    trials = ranked[:wanted]
    check_same_split(trials)
    truths = [lab > 0 for lab in labels]
    candidates = []
    for trial in trials:
        config = trial.trial_config()
        model = (load_model or (lambda path: load_unet(path, compile=False)))(trial.best_checkpoint / "model.keras")
        probs = predict_images(model, val_images, multiple=pad_multiple(config))
        candidates.append(Candidate(trial=trial, config=config, probs=probs, val_iou=pooled_iou(probs, truths)))
        log.info("ensemble candidate %s: val_iou %.4f (leaderboard %.4f)", trial.trial_id,
                 candidates[-1].val_iou, float(trial.best[METRIC]))
        del model
        keras.utils.clear_session()
    if size is None:
        return greedy_selection(candidates, labels, rounds=rounds)
    return top_k_selection(candidates, labels, size)
