"""Ensemble selection on validation maps (Caruana et al. 2004), without models: plain arrays."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from nuclei_search.results.ensemble import Candidate, greedy_selection, parse_size, pooled_iou, top_k_selection, weighted_mean


def _candidates():
    """Truth: the left half of each image is nucleus. Three models, confident where right (0.9 /
    0.1) and mildly wrong (0.4 / 0.6) on two rows each, different rows: any two outvote the
    other's mistakes. A fourth model predicts nothing."""
    truth = np.zeros((2, 8, 8), np.uint16)
    truth[:, :, :4] = 1
    probs = []
    for k in range(3):
        p = np.where(truth > 0, 0.9, 0.1).astype(np.float32)
        rows = slice(2 * k, 2 * k + 2)
        p[:, rows] = np.where(truth[:, rows] > 0, 0.4, 0.6)  # this model is wrong on two rows
        probs.append([p[i][..., None] for i in range(2)])
    weak = [np.full((8, 8, 1), 0.45, np.float32) for _ in range(2)]  # predicts nothing
    names = ["a", "b", "c", "weak"]
    cands = [Candidate(trial=SimpleNamespace(trial_id=n), config=None, probs=pr) for n, pr in zip(names, probs + [weak])]
    for c in cands:
        c.val_iou = pooled_iou(c.probs, [t > 0 for t in truth])
    return cands, list(truth)


def test_greedy_selection_combines_complementary_members_and_is_deterministic():
    cands, labels = _candidates()
    assert [round(c.val_iou, 3) for c in cands[:3]] == [0.6, 0.6, 0.6]
    selection = greedy_selection(cands, labels, rounds=6)
    names = [m.trial.trial_id for m in selection.members]
    assert names == ["a", "b"] and selection.weights == [1, 1] and selection.val_iou == 1.0
    assert [t["added"] for t in selection.trace[:2]] == ["a", "b"]
    assert greedy_selection(cands, labels, rounds=6).trace == selection.trace
    mean = selection.mean_probs()
    assert pooled_iou(mean, [lab > 0 for lab in labels]) == pytest.approx(selection.val_iou)


def test_top_k_and_weighted_mean():
    cands, labels = _candidates()
    top = top_k_selection(cands, labels, 2)
    assert [m.trial.trial_id for m in top.members] == ["a", "b"] and top.weights == [1, 1]
    mean = weighted_mean([cands[0].probs, cands[3].probs], [3, 1])
    np.testing.assert_allclose(mean[0], (3 * cands[0].probs[0] + cands[3].probs[0]) / 4)
    two = [np.zeros((4, 4, 2), np.float32)]
    one = [np.ones((4, 4, 1), np.float32)]
    assert weighted_mean([two, one], [1, 1])[0].shape == (4, 4, 1)  # only the channels all members have


def test_parse_size():
    from nuclei_search.errors import ConfigError

    assert parse_size("auto") is None and parse_size("3") == 3 and parse_size(2) == 2
    for bad in ("0", "-1", "all", ""):
        with pytest.raises(ConfigError):
            parse_size(bad)
