"""Shared pieces of the tests: a tiny search space, reading an experiment back, and checking a CLI
error (exit code 2, one line) and what it left on disk."""

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


# --------------------------------------------------------------------------- CLI errors and what is kept
# (shared by the reliability matrix in tests/reliability/ and the other CLI tests)
def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`nuclei-search ARGV` in-process: (exit code, stdout, stderr)."""
    from nuclei_search.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit code 2 and exactly one stderr line `error: ...` holding every needle; returns the line."""
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Everything under `folder` (hidden files too): relative path -> sha256 of a file, or '<dir>'."""
    import hashlib

    folder = Path(folder)
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }
