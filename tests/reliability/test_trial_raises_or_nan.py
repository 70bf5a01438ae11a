"""Reliability matrix: a trial raising, and a trial whose loss goes NaN (one search covers both rows).

A real Ray Tune grid search (num_cpus=2) over 2 data sources x 2 learning rates: one data
source does not exist (the trial raises DataError), and a learning rate of 1e30 makes the
loss NaN/inf (the trial raises TrialDiverged). The search goes on and completes: exit code
0 (1 when no trial at all finishes), the summary counts the errored trials, each errored
trial keeps its reason in error.txt and the leaderboard shows it as one line
`ERROR: <exception line>`, after --max-failures retries; the good trial keeps its results
and checkpoints.
"""

from __future__ import annotations

import json

import pytest

from search_helpers import run_cli, trial_results

pytestmark = pytest.mark.slow

FAILING_SPACE = """
fixed:
  image_size: 32
  epochs: 2
  batch_size: 4
  base_filters: 4
  backbone: none
  decoder_depth: 3
  batch_norm: false
  instance_method: cc
params:
  data: {choice: [synthetic:12, /nonexistent/dsb.zip]}
  learning_rate: {choice: [3.0e-3, 1.0e+30]}
"""


def test_failing_and_nan_trials_end_as_error_and_the_search_completes(local_ray, tmp_path, capsys):
    space = tmp_path / "fail.yaml"
    space.write_text(FAILING_SPACE)
    storage = tmp_path / "exp"
    code, out, err = run_cli(capsys, "run", "--space", space, "--name", "failing", "--num-samples", "1",
                             "--max-concurrent", "2", "--searcher", "grid", "--scheduler", "none",
                             "--storage", storage, "--max-failures", "1", "--quiet")
    assert code == 0, out + err  # the search itself succeeded: one trial finished
    assert "trials: 4 (1 finished, 3 errored)" in out, out

    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(storage / "failing"))
    by_config = {(t.config["data"], t.config["learning_rate"]): t for t in analysis.trials}
    good = by_config[("synthetic:12", 3e-3)]
    assert good.status == "TERMINATED" and 0.0 <= good.last_result["val_iou"] <= 1.0
    missing = by_config[("/nonexistent/dsb.zip", 3e-3)]
    assert missing.status == "ERROR"
    assert "unknown data source '/nonexistent/dsb.zip'" in open(missing.error_file).read()
    diverged = by_config[("synthetic:12", 1e30)]
    assert diverged.status == "ERROR"
    assert "TrialDiverged" in open(diverged.error_file).read()
    # retried once (FailureConfig max_failures=1) before giving up
    assert diverged.num_failures == 2

    # kept: the good trial's per-epoch results and checkpoint
    good_dir = next(p for p in (storage / "failing").iterdir() if p.is_dir() and good.trial_id in p.name)
    assert trial_results(good_dir) and trial_results(good_dir)[-1]["val_iou"] == good.last_result["val_iou"]
    assert list(good_dir.glob("checkpoint_*/model.keras"))

    # the one-line reasons, as the leaderboard shows them
    code, out, err = run_cli(capsys, "leaderboard", "failing", "--storage", storage, "--format", "json")
    assert code == 0, err
    reasons = {(row["data"], row["learning_rate"]): row["stop_reason"] for row in json.loads(out)}
    assert reasons[("synthetic:12", 3e-3)] == "completed"
    assert reasons[("/nonexistent/dsb.zip", 3e-3)].startswith(
        "ERROR: DataError: unknown data source '/nonexistent/dsb.zip'")
    assert reasons[("synthetic:12", 1e30)].startswith("ERROR: TrialDiverged: training loss became ")
    assert all("\n" not in reason for reason in reasons.values())
