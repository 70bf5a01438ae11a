"""Targets computed from masks, on hand-made arrays."""

import numpy as np
import pytest

from nuclei_search.data_pipeline.targets import boundary_map, labels_from_masks, semantic_mask, touching_borders


def square(shape, y0, y1, x0, x1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_labels_from_masks_later_mask_wins_and_dtype():
    a = square((6, 8), 0, 4, 0, 4)
    b = square((6, 8), 2, 6, 2, 6)
    labels = labels_from_masks([a, b])
    assert labels.dtype == np.uint16 and labels.shape == (6, 8)
    assert labels[0, 0] == 1 and labels[3, 3] == 2 and labels[5, 7] == 0
    assert set(np.unique(labels)) == {0, 1, 2}
    # 0/255 uint8 masks and a stacked array work too
    stacked = np.stack([a, b]).astype(np.uint8) * 255
    np.testing.assert_array_equal(labels_from_masks(stacked), labels)


def test_labels_from_masks_needs_mask_or_shape():
    assert labels_from_masks([], shape=(3, 4)).shape == (3, 4)
    with pytest.raises(ValueError):
        labels_from_masks([])


def test_semantic_mask():
    labels = np.array([[0, 1, 2], [0, 0, 3]], np.uint16)
    np.testing.assert_array_equal(semantic_mask(labels), [[0, 1, 1], [0, 0, 1]])
    assert semantic_mask(labels).dtype == np.uint8


def test_boundary_map_is_the_one_pixel_inner_contour():
    labels = np.zeros((9, 9), np.uint16)
    labels[2:7, 2:7] = 1  # a 5x5 nucleus
    boundary = boundary_map(labels)
    expected = np.zeros((9, 9), np.uint8)
    expected[2:7, 2:7] = 1
    expected[3:6, 3:6] = 0  # interior 3x3 is not contour
    np.testing.assert_array_equal(boundary, expected)


def test_boundary_map_separates_touching_nuclei():
    labels = np.zeros((7, 12), np.uint16)
    labels[1:6, 1:6] = 1
    labels[1:6, 6:11] = 2  # touches nucleus 1 along column 5/6
    boundary = boundary_map(labels)
    assert boundary[3, 5] == 1 and boundary[3, 6] == 1  # the shared edge, both sides
    assert boundary[3, 3] == 0 and boundary[3, 8] == 0  # interiors
    assert boundary[labels == 0].sum() == 0  # never on background


def test_boundary_map_at_image_edge_only_where_the_nucleus_ends():
    labels = np.ones((5, 5), np.uint16)  # fills the image
    assert boundary_map(labels).sum() == 0


def test_touching_borders_only_between_two_nuclei():
    labels = np.zeros((9, 20), np.uint16)
    labels[2:7, 2:7] = 1
    labels[2:7, 8:13] = 2  # one background column (7) between 1 and 2
    labels[2:7, 17:20] = 3  # far from the others
    touching = touching_borders(labels, radius=1)
    assert touching.dtype == np.uint8
    assert touching[4, 7] == 1  # the gap pixel between 1 and 2
    assert touching[4, 6] == 0  # with radius 1 only the gap itself
    wider = touching_borders(labels, radius=2)
    assert wider[4, 6] == 1 and wider[4, 8] == 1  # contour pixels facing each other
    assert wider[:, 14:].sum() == 0
    assert touching[:, 14:].sum() == 0  # nucleus 3 is isolated
    assert touching[4, 3] == 0
    alone = np.zeros((9, 9), np.uint16)
    alone[2:7, 2:7] = 5
    assert touching_borders(alone).sum() == 0


def test_touching_borders_radius_reaches_wider_gaps():
    labels = np.zeros((5, 12), np.uint16)
    labels[:, 0:4] = 1
    labels[:, 7:12] = 2  # a gap of 3 columns (4, 5, 6)
    assert touching_borders(labels, radius=1).sum() == 0
    assert touching_borders(labels, radius=2)[2, 5] == 1
