"""Deterministic train/validation split, stratified by image type."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Mapping, Sequence

from nuclei_search.errors import ConfigError


def train_val_split(ids: Sequence[str], types: Mapping[str, str], val_fraction: float,
                    seed: int) -> tuple[list[str], list[str]]:
    """Split `ids` into sorted (train_ids, val_ids).

    Each image type is split on its own: round(n * val_fraction) of its images go to
    validation, at least one when the type has two or more images and never all of
    them. Deterministic in (ids, types, val_fraction, seed), whatever the input order.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1) (got {val_fraction!r})")
    groups: dict[str, list[str]] = defaultdict(list)
    for image_id in sorted(set(ids)):
        groups[types.get(image_id, "unknown")].append(image_id)
    train: list[str] = []
    val: list[str] = []
    for kind in sorted(groups):
        members = groups[kind]
        rng = random.Random(f"{seed}:{kind}")
        shuffled = members[:]
        rng.shuffle(shuffled)
        n = len(shuffled)
        n_val = 0 if n < 2 else min(n - 1, max(1, round(n * float(val_fraction))))
        val.extend(shuffled[:n_val])
        train.extend(shuffled[n_val:])
    return sorted(train), sorted(val)
