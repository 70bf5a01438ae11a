"""The synthetic generator: deterministic Kaggle layout, read by the same loader."""

import hashlib
from pathlib import Path

import numpy as np

from nuclei_search.data_pipeline.preprocess import image_type
from nuclei_search.data_pipeline.sources import open_source
from nuclei_search.data_pipeline.synthetic import IMAGE_TYPES, generate_dataset, image_kind
from nuclei_search.data_pipeline.targets import touching_borders


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_generation_is_deterministic_and_seeded(tmp_path):
    a = generate_dataset(tmp_path / "a", n_images=4, seed=7)
    b = generate_dataset(tmp_path / "b", n_images=4, seed=7)
    c = generate_dataset(tmp_path / "c", n_images=4, seed=8)
    assert tree_digest(a) == tree_digest(b) != tree_digest(c)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_kaggle_layout_and_variety(synthetic_folder):
    ids = sorted(p.name for p in synthetic_folder.iterdir())
    assert len(ids) == 12
    for image_id in ids:
        assert (synthetic_folder / image_id / "images" / f"{image_id}.png").is_file()
        assert list((synthetic_folder / image_id / "masks").glob("*.png"))
    source = open_source(synthetic_folder)
    assert source.ids == ids
    shapes = {source.image_shape(i) for i in ids}
    assert len(shapes) > 3 and any(h != w for h, w in shapes)
    assert all(96 <= h <= 192 and 96 <= w <= 192 for h, w in shapes)


def test_read_by_the_loader_with_touching_nuclei_and_types(synthetic_folder):
    source = open_source(synthetic_folder)
    touching_images = 0
    for index, image_id in enumerate(source.ids):
        image, labels = source.read_labels(image_id)
        assert image.dtype == np.uint8 and image.shape == (*labels.shape, 3)
        masks = source.read_masks(image_id)
        assert len(np.unique(labels)) - 1 == len(masks)  # disjoint masks, none lost
        assert sum(int(m.sum()) for m in masks) == int((labels > 0).sum())
        touching_images += int(touching_borders(labels, radius=1).any())
        assert image_type(image) == image_kind(index)  # the documented heuristic agrees
    assert touching_images >= len(source.ids) // 2
    assert {image_kind(i) for i in range(12)} == set(IMAGE_TYPES)


def test_refuses_to_overwrite(tmp_path, synthetic_folder):
    import pytest

    from nuclei_search.errors import DataError

    with pytest.raises(DataError, match="not empty"):
        generate_dataset(synthetic_folder, n_images=2)
