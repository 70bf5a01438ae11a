"""Shared pieces of the tests: a tiny search space, reading an experiment back, and checking a CLI
error (exit code 2, one line) and what it left on disk."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

# Tiny but real: 32 px crops, plain U-Net, few filters (the `fixed:` entries; {epochs} to fill).
# No BatchNorm: these spaces test the search, not the model (tests/test_models_*.py build both); most
# of a tiny trial is tracing its train step: without BatchNorm one takes 3.4 s instead of 4.6 s (Zen 3).
TINY_FIXED = """  image_size: 32
  epochs: {epochs}
  batch_size: 4
  crops_per_image: 1
  base_filters: 4
  backbone: none
  decoder_depth: 3
  batch_norm: false
  augment: flip
  instance_method: cc
"""
# ... on 12 synthetic images, three learning rates (1e-6 learns nothing).
TINY_SPACE = """
fixed:
  data: synthetic:12
""" + TINY_FIXED + """params:
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
    """The rows Ray wrote to the trial's result.json."""
    return _complete_rows(trial_dir / "result.json")


def trial_starts(trial_dir: Path) -> list[dict]:
    """The trial's (re)starts, as its trainable recorded them (search/trainable.py)."""
    return _complete_rows(trial_dir / "trial_starts.jsonl")


def _complete_rows(path: Path) -> list[dict]:
    """One JSON object a line. A last line without its newline is being written (tests poll running
    searches; trial_starts.jsonl is rewritten whole): it is left out, never half parsed."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line.strip()]


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


def listening_sockets(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, local address as in /proc/net/tcp, port) of every TCP socket in LISTEN state the pids hold."""
    sockets: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for row in fh.read().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A":  # LISTEN
                    address, port = fields[1].split(":")
                    sockets[fields[9]] = (address, int(port, 16))
    found = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # ended meanwhile
            continue
        for link in links:
            if link.startswith("socket:[") and link[8:-1] in sockets:
                found.append((pid, *sockets[link[8:-1]]))
    return found


def check_non_terminal_output(done: subprocess.CompletedProcess, name: str, trials: int) -> None:
    """A `run` whose output was not a terminal: one line per event, then the summary ending with
    the best trial and the next command, and none of the noise. (The dashboard test's search,
    tests/test_dashboard.py, is checked with it.)"""
    pattern = event_pattern(name, trials)
    lines = done.stdout.strip().splitlines()
    events, summary = lines[:-5], lines[-5:]
    for line in events:
        assert pattern.match(line), line
    kinds = [pattern.match(line).group(6).split()[0] for line in events]
    assert kinds.count("started") == trials and kinds.count("epoch") >= trials
    assert kinds.count("finished") + kinds.count("stopped") == trials
    assert pattern.match(events[-1]).group(1) == str(trials)  # the last event: every trial done
    assert summary[0].startswith("experiment: ") and summary[1] == f"trials: {trials} ({trials} finished, 0 errored)"
    assert summary[2].startswith("best trial: ") and summary[-1] == f"next: nuclei-search leaderboard {name}"
    for noise in NOISE:
        assert noise not in done.stdout + done.stderr, noise
    assert len(done.stderr.strip().splitlines()) <= 1, done.stderr  # at most a machine-specific Ray warning


NOISE = ("cuInit", "oneDNN", "absl", "cuda_", "Configuration for experiment", "Trial status", "╭",
         "Token authentication", "ConcurrencyLimiter", "new study created", "TUNE_WARN", "Checkpoint successfully")


def event_pattern(name: str, total: int) -> re.Pattern:
    """One line of the non-terminal console: the header, then the event."""
    return re.compile(
        rf"^\d\d:\d\d:\d\d {re.escape(name)}: (\d+)/{total} trials done, (\d+) running, "
        r"best val_iou_best (-|\d\.\d{4} \([0-9a-f]{8}\)), elapsed \d+\.\d min(, left ≤ \d+\.\d min)? "
        r"\| trial ([0-9a-f]{8}) (started|epoch \d+ val_iou_best \S+|finished|stopped early at epoch \d+)$")
