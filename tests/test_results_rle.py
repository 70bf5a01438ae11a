"""Kaggle run-length encoding: column-major, 1-indexed start/length pairs."""

from __future__ import annotations

import numpy as np
import pytest

from nuclei_search.errors import DataError
from nuclei_search.results.rle import instance_rles, rle_decode, rle_encode, submission_rows


def test_hand_made_mask_is_numbered_top_to_bottom_then_left_to_right():
    # 4 rows x 3 columns; pixel (r, c) is number c * 4 + r + 1
    mask = np.array([
        [1, 0, 1],
        [1, 0, 1],
        [0, 1, 0],
        [0, 1, 1],
    ], dtype=bool)
    # column 0: pixels 1, 2; column 1: pixels 7, 8; column 2: pixels 9, 10 and 12
    # -> runs: 1-2, 7-10 (7, 8 continue into 9, 10 across the column boundary), 12
    assert rle_encode(mask) == "1 2 7 4 12 1"
    np.testing.assert_array_equal(rle_decode("1 2 7 4 12 1", mask.shape), mask)


def test_row_major_would_give_a_different_answer():
    mask = np.zeros((2, 3), bool)
    mask[0, 1] = True  # row 0, column 1: number 1 * 2 + 0 + 1 = 3 (row-major would say 2)
    assert rle_encode(mask) == "3 1"


def test_empty_and_full_masks():
    assert rle_encode(np.zeros((5, 7), bool)) == ""
    assert rle_encode(np.ones((5, 7), bool)) == "1 35"
    assert not rle_decode("", (5, 7)).any()
    assert rle_decode("1 35", (5, 7)).all()


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (17, 23), (260, 347)])
def test_round_trip_random_masks(shape):
    rng = np.random.default_rng(sum(shape))
    for density in (0.05, 0.5, 0.95):
        mask = rng.random(shape) < density
        assert np.array_equal(rle_decode(rle_encode(mask), shape), mask)


def test_bad_rle_is_a_data_error():
    with pytest.raises(DataError, match="odd count"):
        rle_decode("1 2 3", (4, 4))
    with pytest.raises(DataError, match="outside"):
        rle_decode("15 5", (4, 4))
    with pytest.raises(DataError, match="not a list of integers"):
        rle_decode("1 x", (4, 4))


def test_submission_rows_one_per_instance_and_an_empty_row_for_no_nuclei():
    labels = np.zeros((6, 5), np.uint16)
    labels[0:2, 0:2] = 1
    labels[3:6, 3] = 4  # labels need not be consecutive
    rows = submission_rows("img", labels)
    assert rows == [("img", "1 2 7 2"), ("img", "22 3")]
    assert [label for label, _ in instance_rles(labels)] == [1, 4]
    # the instances decode back to disjoint masks covering exactly the labelled pixels
    decoded = [rle_decode(rle, labels.shape) for _, rle in rows]
    assert not (decoded[0] & decoded[1]).any()
    np.testing.assert_array_equal(decoded[0] | decoded[1], labels > 0)
    assert submission_rows("blank", np.zeros((3, 3), np.uint16)) == [("blank", "")]


def test_instance_encoding_from_bounding_boxes_matches_whole_mask_encoding():
    from scipy import ndimage as ndi

    labels = ndi.label(np.random.default_rng(3).random((30, 20)) < 0.6)[0]
    labels[:, 5:7] = labels.max() + 1  # full-height columns: one run crosses the column boundary
    encoded = dict(instance_rles(labels))
    assert encoded[int(labels.max())] == f"{5 * 30 + 1} 60"
    assert set(encoded) == set(np.unique(labels)) - {0}
    for label, rle in encoded.items():
        assert rle == rle_encode(labels == label)
