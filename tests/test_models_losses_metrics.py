"""Losses, Keras metrics, NumPy metrics and the Kaggle DSB2018 score (hand-made cases)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nuclei_search.models.losses import LOSSES, get_loss
from nuclei_search.models.metrics import (
    DiceScore,
    ForegroundIoU,
    PixelIoUAccumulator,
    dice,
    foreground_iou,
    instance_iou_matrix,
    kaggle_ap,
    kaggle_map,
    keras_metrics,
)
from nuclei_search.errors import ConfigError


pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def _masks(channels: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((2, 16, 16, channels)) > 0.6).astype("float32")
    return y, rng.random(y.shape).astype("float32")


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("channels", [1, 2])
def test_loss_perfect_is_near_zero_and_below_random_and_wrong(name, channels):
    loss = get_loss(name)
    y, random_pred = _masks(channels)
    perfect = float(loss(y, y))
    random = float(loss(y, random_pred))
    wrong = float(loss(y, 1.0 - y))
    assert perfect < 1e-3 if name != "dice" else perfect < 0.02
    assert perfect < random < wrong
    assert np.isfinite(wrong)


def test_dice_loss_perfect_is_zero_and_uses_every_channel():
    loss = get_loss("dice")
    y, _ = _masks(2)
    assert float(loss(y, y)) == pytest.approx(0.0, abs=1e-6)
    bad_boundary = y.copy()
    bad_boundary[..., 1] = 1.0 - y[..., 1]
    assert float(loss(y, bad_boundary)) > 0.3  # the boundary channel counts


def test_dice_loss_empty_target_and_empty_prediction_is_zero():
    z = np.zeros((1, 8, 8, 1), "float32")
    assert float(get_loss("dice")(z, z)) == pytest.approx(0.0, abs=1e-5)


def test_losses_are_the_textbook_formulas_over_every_pixel_and_channel():
    """bce and focal are Keras' own losses; bce_dice adds the per-sample Dice. Checked against
    the formulas in NumPy, with two channels and a batch of two."""
    y, p = _masks(2)
    y = np.concatenate([y, 1.0 - y], axis=-1).repeat(2, axis=0)
    p = np.concatenate([p, 1.0 - p], axis=-1).repeat(2, axis=0)
    q = np.clip(p, 1e-7, 1 - 1e-7)
    bce = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    p_t = y * q + (1 - y) * (1 - q)
    focal = (y * 0.25 + (1 - y) * 0.75) * (1 - p_t) ** 2 * bce
    dice = 1 - (2 * (y * q).sum(axis=(1, 2)) + 1) / (y.sum(axis=(1, 2)) + q.sum(axis=(1, 2)) + 1)
    assert float(get_loss("bce")(y, p)) == pytest.approx(bce.mean(), rel=1e-4)
    assert float(get_loss("focal")(y, p)) == pytest.approx(focal.mean(), rel=1e-4)
    assert float(get_loss("bce_dice")(y, p)) == pytest.approx(bce.mean() + dice.mean(), rel=1e-4)
    assert isinstance(get_loss("bce"), keras.losses.BinaryCrossentropy)
    assert isinstance(get_loss("focal"), keras.losses.BinaryFocalCrossentropy)


def test_models_saved_with_the_earlier_loss_configs_still_load():
    """A checkpoint holds its loss's config; the ones written before the losses became Keras'
    (name, reduction and dtype only; focal with alpha and gamma) deserialise to the same loss."""
    for name, config in (("BinaryCrossentropyLoss", {"name": "bce", "reduction": "sum_over_batch_size", "dtype": None}),
                         ("FocalLoss", {"name": "focal", "reduction": "sum_over_batch_size", "dtype": None,
                                        "alpha": 0.25, "gamma": 2.0})):
        loss = keras.losses.deserialize({"module": None, "class_name": name, "config": config,
                                         "registered_name": f"nuclei_search>{name}"})
        y, p = _masks(1)
        assert float(loss(y, p)) == pytest.approx(float(get_loss(config["name"])(y, p)))


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_serialises(name):
    loss = get_loss(name)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    y, p = _masks(1)
    assert type(restored) is type(loss)
    assert float(restored(y, p)) == pytest.approx(float(loss(y, p)))


def test_unknown_loss():
    with pytest.raises(ConfigError, match="loss"):
        get_loss("lovasz")


# ----------------------------------------------------------------------- Keras metrics
def test_keras_metrics_accumulate_pixel_global_over_batches():
    rng = np.random.default_rng(1)
    y = (rng.random((4, 16, 16, 2)) > 0.5).astype("float32")
    p = rng.random((4, 16, 16, 2)).astype("float32")
    iou, dsc = keras_metrics()
    for i in range(4):  # one batch at a time: the epoch result is global, not a batch mean
        iou.update_state(y[i : i + 1], p[i : i + 1])
        dsc.update_state(y[i : i + 1], p[i : i + 1])
    t, q = y[..., 0] > 0.5, p[..., 0] > 0.5
    inter, union = np.sum(t & q), np.sum(t | q)
    assert float(iou.result()) == pytest.approx(inter / union, rel=1e-6)
    assert float(dsc.result()) == pytest.approx(2 * inter / (t.sum() + q.sum()), rel=1e-6)
    iou.reset_state()
    assert float(iou.result()) == 1.0  # nothing seen: empty vs empty


def test_keras_metrics_threshold_and_serialisation():
    m = ForegroundIoU(threshold=0.7)
    m2 = keras.metrics.deserialize(keras.metrics.serialize(m))
    assert isinstance(m2, ForegroundIoU) and m2.threshold == 0.7 and m2.name == "foreground_iou"
    y = np.ones((1, 2, 2, 1), "float32")
    m2.update_state(y, np.full_like(y, 0.6))
    assert float(m2.result()) == 0.0
    assert DiceScore().name == "dice_score"


# ----------------------------------------------------------------------- NumPy metrics
def test_numpy_iou_dice_and_split_accumulator():
    a = np.zeros((4, 4), bool)
    a[:2] = True  # 8 px
    b = np.zeros((4, 4), bool)
    b[1:3] = True  # 8 px, overlap 4
    assert foreground_iou(b, a) == pytest.approx(4 / 12)
    assert dice(b, a) == pytest.approx(8 / 16)
    assert foreground_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    acc = PixelIoUAccumulator()
    acc.update(b, a).update(a, a)  # (4 + 8) / (12 + 8)
    assert acc.iou == pytest.approx(12 / 20)
    assert acc.result()["images"] == 2
    # probabilities with a channel axis are thresholded on channel 0
    probs = np.stack([b * 0.9, np.ones((4, 4))], axis=-1)
    assert foreground_iou(probs, a, threshold=0.5) == pytest.approx(4 / 12)


# ---------------------------------------------------------------------- Kaggle metric
def _rect(labels, value, rows, cols):
    labels[rows[0] : rows[1], cols[0] : cols[1]] = value
    return labels


def test_kaggle_perfect_empty_and_both_empty():
    truth = np.zeros((40, 60), np.uint16)
    _rect(truth, 1, (2, 12), (2, 12))
    _rect(truth, 7, (20, 30), (30, 45))  # labels need not be consecutive
    relabelled = np.where(truth == 7, 3, np.where(truth == 1, 9, 0))
    assert kaggle_ap(truth, relabelled) == 1.0
    assert kaggle_ap(truth, np.zeros_like(truth)) == 0.0
    assert kaggle_ap(np.zeros_like(truth), truth) == 0.0
    assert kaggle_ap(np.zeros_like(truth), np.zeros_like(truth)) == 1.0


def test_kaggle_shifted_nucleus_counts_only_at_050_and_055():
    truth = _rect(np.zeros((30, 30), int), 1, (5, 20), (5, 20))  # 15 x 15
    pred = _rect(np.zeros((30, 30), int), 1, (5, 20), (9, 24))  # shifted 4 px
    # IoU = 15*11 / (15*15 + 15*15 - 15*11) = 11/19 = 0.5789: a hit at t = 0.50, 0.55 only
    assert instance_iou_matrix(truth, pred)[0, 0] == pytest.approx(11 / 19)
    assert kaggle_ap(truth, pred) == pytest.approx(2 / 10)


def test_kaggle_split_nucleus():
    truth = np.zeros((40, 60), int)
    _rect(truth, 1, (0, 10), (0, 21))  # A: 10 x 21 = 210 px
    _rect(truth, 2, (20, 30), (30, 40))  # B: matched perfectly
    pred = np.zeros_like(truth)
    _rect(pred, 1, (0, 10), (0, 13))  # IoU with A 130/210 = 0.619
    _rect(pred, 2, (0, 10), (13, 21))  # IoU with A 80/210 = 0.381
    _rect(pred, 3, (20, 30), (30, 40))
    # t in {0.50, 0.55, 0.60}: TP=2 (A, B), FP=1, FN=0 -> 2/3
    # t in {0.65 .. 0.95} (7): TP=1 (B), FP=2, FN=1 -> 1/4
    assert kaggle_ap(truth, pred) == pytest.approx((3 * 2 / 3 + 7 * 1 / 4) / 10)  # 0.375
    # split into exact halves: no half exceeds IoU 0.5 -> TP=1 (B), FP=2, FN=1 everywhere
    even = np.zeros_like(truth)
    _rect(even, 1, (0, 10), (0, 10))
    _rect(even, 2, (0, 10), (10, 20))
    truth_even = truth.copy()
    truth_even[truth_even == 1] = 0
    _rect(truth_even, 1, (0, 10), (0, 20))
    _rect(even, 3, (20, 30), (30, 40))
    assert kaggle_ap(truth_even, even) == pytest.approx(0.25)


def test_kaggle_merged_nuclei():
    truth = np.zeros((20, 40), int)
    _rect(truth, 1, (0, 10), (0, 15))  # 150 px
    _rect(truth, 2, (0, 10), (15, 21))  # 60 px, touching
    pred = _rect(np.zeros_like(truth), 1, (0, 10), (0, 21))  # one 210 px blob
    # IoU(1) = 150/210 = 0.714 > t for t = 0.50 .. 0.70 (5 thresholds): TP=1, FP=0, FN=1 -> 1/2
    # t = 0.75 .. 0.95: TP=0, FP=1, FN=2 -> 0
    assert kaggle_ap(truth, pred) == pytest.approx(5 * 0.5 / 10)


def test_kaggle_map_and_iou_matrix_against_loops():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, (20, 20))
    pred = rng.integers(0, 4, (20, 20))
    iou = instance_iou_matrix(truth, pred)
    for i in range(1, 5):
        for j in range(1, 4):
            t, p = truth == i, pred == j
            assert iou[i - 1, j - 1] == pytest.approx((t & p).sum() / (t | p).sum())
    perfect = _rect(np.zeros((10, 10), int), 1, (0, 5), (0, 5))
    assert kaggle_map([perfect, perfect], [perfect, np.zeros_like(perfect)]) == pytest.approx(0.5)
