"""Train/validation split: deterministic, stratified by image type."""

import pytest

from nuclei_search.data_pipeline.split import train_val_split
from nuclei_search.errors import ConfigError

IDS = [f"img{i:02d}" for i in range(30)]
TYPES = {i: ("fluorescence" if n < 20 else "histology" if n < 27 else "brightfield") for n, i in enumerate(IDS)}


def test_split_is_deterministic_sorted_and_disjoint():
    train, val = train_val_split(IDS, TYPES, 0.2, seed=3)
    assert (train, val) == train_val_split(list(reversed(IDS)), TYPES, 0.2, seed=3)
    assert train == sorted(train) and val == sorted(val)
    assert not set(train) & set(val) and set(train) | set(val) == set(IDS)
    assert train_val_split(IDS, TYPES, 0.2, seed=4) != (train, val)


def test_split_is_stratified_by_type():
    train, val = train_val_split(IDS, TYPES, 0.2, seed=0)
    per_type = {t: sum(1 for i in val if TYPES[i] == t) for t in set(TYPES.values())}
    assert per_type == {"fluorescence": 4, "histology": 1, "brightfield": 1}  # round(n * 0.2), >= 1


def test_every_type_with_two_images_reaches_validation_but_never_all():
    ids = ["a", "b", "c"]
    types = {"a": "fluorescence", "b": "brightfield", "c": "brightfield"}
    train, val = train_val_split(ids, types, 0.05, seed=0)
    assert train.count("a") == 1  # a single image stays in training
    assert len([i for i in val if types[i] == "brightfield"]) == 1
    train, val = train_val_split(ids, types, 0.95, seed=0)
    assert any(types[i] == "brightfield" for i in train)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_fraction(fraction):
    with pytest.raises(ConfigError):
        train_val_split(IDS, TYPES, fraction, seed=0)
