"""Postprocessing chosen on validation predictions, and validation scores by image type."""

from __future__ import annotations

import numpy as np

from nuclei_search.models.evaluation import score_predictions
from nuclei_search.models.postprocess import Postprocess
from nuclei_search.models.postprocess_choice import choose_postprocessing


def _discs(n=3, shape=(64, 64), r=8, seed=0):
    """Label maps of separated discs, plus under-confident predictions of them (p 0.4 inside,
    0.05 outside) and small confident specks of noise (p 0.9, 3x3 px) away from the nuclei."""
    rng = np.random.default_rng(seed)
    labels, probs = [], []
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(n):
        lab = np.zeros(shape, np.uint16)
        centres = [(16, 16), (16, 46), (46, 30)]
        for k, (cy, cx) in enumerate(centres, 1):
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = k
        prob = np.where(lab > 0, 0.4, 0.05).astype(np.float32)
        for _ in range(3):
            y, x = rng.integers(57, 61), rng.integers(2, 60)
            prob[y : y + 3, x : x + 3] = 0.9
        labels.append(lab)
        probs.append(prob[..., None])
    return probs, labels


def test_chosen_postprocessing_beats_the_defaults_and_is_deterministic():
    probs, labels = _discs()
    default = score_predictions(probs, labels, 0.5, "watershed")
    assert default.map < 0.3  # at 0.5 only the specks are found

    choice = choose_postprocessing(probs, labels, "watershed")
    assert choice.chosen.threshold < 0.4 and choice.chosen.min_size > 9  # nuclei kept, 9-px specks dropped
    assert choice.val_map > 0.9 and choice.val_map_default == default.map
    again = choose_postprocessing(probs, labels, "watershed")
    assert again.chosen == choice.chosen and again.trace == choice.trace

    chosen = score_predictions(probs, labels, choice.chosen.threshold, "watershed",
                               postprocess=choice.chosen.instance_kwargs())
    assert chosen.map == choice.val_map
    card = choice.card(len(labels))
    assert card["threshold"] == choice.chosen.threshold and card["chosen_on"].startswith("validation")
    assert Postprocess.from_dict(card) == choice.chosen  # what predict/evaluate read back


def test_postprocess_overrides_and_bad_values():
    import pytest

    from nuclei_search.errors import ConfigError

    card = {"threshold": 0.35, "min_size": 20, "h": 1.0, "boundary_threshold": None, "chosen_on": "validation"}
    assert Postprocess.from_dict(card, min_size=None, h=3.0) == Postprocess(0.35, 20, 3.0, None)
    with pytest.raises(ConfigError, match="threshold"):
        Postprocess.from_dict(card, threshold=1.5)
    with pytest.raises(ConfigError, match="min_size"):
        Postprocess.from_dict(card, min_size=-1)


def test_scores_by_image_type():
    probs, labels = _discs(n=3)
    probs[2] = np.zeros_like(probs[2])  # the histology image is missed entirely
    result = score_predictions(probs, labels, 0.3, "cc", types=["fluorescence", "fluorescence", "histology"])
    assert set(result.by_type) == {"fluorescence", "histology"}
    assert result.by_type["histology"] == {"iou": 0.0, "dice": 0.0, "map": 0.0, "n": 1}
    assert result.by_type["fluorescence"]["iou"] > 0.9 and result.by_type["fluorescence"]["n"] == 2
    metrics = result.as_metrics()
    assert metrics["val_iou_histology"] == 0.0 and metrics["val_map_fluorescence"] > 0
    assert "val_iou_brightfield" not in metrics


def test_test_time_augmentation_is_kept_only_when_it_raises_validation_map():
    from nuclei_search.config import TrialConfig
    from nuclei_search.results.export import choose_for_card

    probs, labels = _discs()
    for prob, lab in zip(probs, labels):
        prob[lab == 1] = 0.05  # the plain prediction misses one nucleus an image
    sharp = [np.where(lab > 0, 0.95, 0.01).astype(np.float32)[..., None] for lab in labels]  # "TTA" finds it
    blurred = [np.full_like(p, 0.45) for p in probs]  # "TTA" that only blurs
    config = TrialConfig()
    types = ["fluorescence"] * len(labels)

    chosen, section = choose_for_card(probs, labels, types, config, tta_probs=sharp)
    assert chosen.tta and section["tta"] is True and Postprocess.from_dict(section) == chosen
    assert section["tta_compared"]["tta"]["val_map"] > section["tta_compared"]["plain"]["val_map"]
    assert section["metrics"]["val_map"] == section["val_map"] == section["tta_compared"]["tta"]["val_map"]
    again, _ = choose_for_card(probs, labels, types, config, tta_probs=sharp)
    assert again == chosen  # deterministic

    chosen, section = choose_for_card(probs, labels, types, config, tta_probs=blurred)
    assert not chosen.tta and section["tta"] is False and set(section["tta_compared"]) == {"plain", "tta"}
    # forced either way, only that one is considered
    forced, section = choose_for_card(probs, labels, types, config, tta_probs=blurred, tta=True)
    assert forced.tta and set(section["tta_compared"]) == {"tta"}
    _, section = choose_for_card(probs, labels, types, config, tta_probs=sharp, tta=False)
    assert section["tta"] is False and set(section["tta_compared"]) == {"plain"}
    # a tie keeps the cheaper plain prediction
    chosen, _ = choose_for_card(probs, labels, types, config, tta_probs=[p.copy() for p in probs])
    assert not chosen.tta


def test_tta_setting_reads_back_and_rejects_non_booleans():
    import pytest

    from nuclei_search.errors import ConfigError

    assert Postprocess.from_dict({"tta": True}).tta and not Postprocess.from_dict({}).tta
    assert not Postprocess.from_dict({"tta": True}, tta=False).tta  # --no-tta wins over the card
    with pytest.raises(ConfigError, match="tta"):
        Postprocess.from_dict({"tta": "yes"})
