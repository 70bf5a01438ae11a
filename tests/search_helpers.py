"""Shared pieces of the search tests: a tiny space and a way to read an experiment back."""

from __future__ import annotations

import json
from pathlib import Path

# Tiny but real: 12 synthetic images, 32 px crops, plain U-Net, few filters.
TINY_SPACE = """
fixed:
  data: synthetic:12
  image_size: 32
  epochs: {epochs}
  batch_size: 4
  crops_per_image: 1
  base_filters: 4
  backbone: none
  decoder_depth: 3
  augment: flip
  instance_method: cc
params:
  learning_rate: {{choice: [1.0e-6, 3.0e-3, 1.0e-2]}}
  dropout: {{uniform: [0.0, 0.2]}}
  loss: {{choice: [bce, bce_dice]}}
"""


def write_space(folder: Path, epochs: int = 3, text: str = TINY_SPACE) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(text.format(epochs=epochs))
    return path


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if p.is_dir() and (p / "params.json").is_file())


def trial_results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trial_starts(trial_dir: Path) -> list[dict]:
    path = trial_dir / "trial_starts.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
