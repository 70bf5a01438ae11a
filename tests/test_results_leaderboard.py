"""Leaderboard and compare on a tiny real Ray Tune experiment (one errored trial)."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil

import pandas as pd
import pytest

from nuclei_search.cli import main
from nuclei_search.results.leaderboard import compare, format_leaderboard, leaderboard, sort_leaderboard
from nuclei_search.results.trials import load_experiment
from results_helpers import EPOCHS, MISSING_DATA, one_line_error

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def board(tiny_experiment) -> pd.DataFrame:
    return leaderboard(str(tiny_experiment))


def test_one_row_per_trial_with_statuses_and_stop_reasons(board, tiny_experiment):
    from search_helpers import trial_dirs

    assert len(board) == len(trial_dirs(tiny_experiment)) == 3
    assert set(board["status"]) == {"TERMINATED", "ERROR"}
    errored = board[board["status"] == "ERROR"]
    assert len(errored) == 1
    row = errored.iloc[0]
    # the one-line reason is the exception line, not Ray's "Failure # 1" header
    assert row["stop_reason"].startswith("ERROR: ") and "\n" not in row["stop_reason"]
    assert "unknown data source" in row["stop_reason"] and MISSING_DATA in row["stop_reason"]
    assert row["data"] == MISSING_DATA and math.isnan(row["val_iou"]) and pd.isna(row["checkpoint"])
    # errored rows sort last; finished ones are ranked by their best epoch
    assert board.iloc[-1]["status"] == "ERROR"
    done = board[board["status"] == "TERMINATED"]
    assert list(done["val_iou"]) == sorted(done["val_iou"], reverse=True)
    for _, r in done.iterrows():
        assert 0.0 <= r["val_iou"] <= 1.0 and 0.0 <= r["val_dice"] <= 1.0 and 0.0 <= r["val_map"] <= 1.0
        assert 1 <= r["best_epoch"] <= r["epochs_run"] <= EPOCHS
        assert r["stop_reason"] == ("completed" if r["epochs_run"] == EPOCHS else "early-stopped")
        assert r["minutes"] > 0 and r["engine"] == "ray" and r["experiment"] == tiny_experiment.name
        # the checkpoint of the best epoch exists and holds that epoch
        state = json.loads(open(f"{r['checkpoint']}/train_state.json").read())
        assert state["epoch"] == r["best_epoch"]
        assert state["best"]["val_iou"] == pytest.approx(r["val_iou"])
    assert "completed" in set(done["stop_reason"])


def test_hyperparameter_columns_are_the_searched_and_the_varying_ones(board):
    hyper = board.attrs["hyperparameters"]
    assert hyper[:4] == ["data", "learning_rate", "dropout", "loss"]
    # fixed values (same in every trial) are not repeated in every row
    for fixed in ("image_size", "base_filters", "backbone", "epochs"):
        assert fixed not in board.columns
    assert list(board.columns[:2]) == ["id", "status"]
    assert set(board["learning_rate"].dropna()) <= {3e-3, 1e-2}


def test_sort_and_top(board):
    by_minutes = sort_leaderboard(board, "minutes")
    assert list(by_minutes["minutes"]) == sorted(board["minutes"])
    by_map = sort_leaderboard(board, "val_map", top=2)
    assert len(by_map) == 2 and by_map["val_map"].notna().all()
    assert by_map.iloc[0]["val_map"] >= by_map.iloc[1]["val_map"]
    reverse = sort_leaderboard(board, "val_iou", reverse=True)
    assert reverse["val_iou"].dropna().is_monotonic_increasing


def test_every_format_parses(board):
    records = json.loads(format_leaderboard(board, "json"))
    assert len(records) == 3 and {"id", "status", "val_iou", "stop_reason", "checkpoint"} <= set(records[0])
    assert any(r["val_iou"] is None for r in records)  # NaN becomes null: valid JSON
    rows = list(csv.DictReader(io.StringIO(format_leaderboard(board, "csv"))))
    assert len(rows) == 3 and rows[0]["id"] == board.iloc[0]["id"]
    md = format_leaderboard(board, "md").splitlines()
    assert md[0].startswith("| id | status |") and set(md[1].replace(" ", "")) <= {"|", "-"}
    assert len(md) == 2 + 3 and all(line.startswith("|") and line.endswith("|") for line in md)
    html = format_leaderboard(board, "html")
    assert html.count("<tr") == 1 + 3 and "<table" in html


def test_cli_leaderboard_formats_and_errors(tiny_experiment, capsys):
    storage = str(tiny_experiment.parent)
    assert main(["leaderboard", tiny_experiment.name, "--storage", storage, "--format", "json", "--top", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["leaderboard", tiny_experiment.name, "--storage", storage, "--sort", "minutes",
                 "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [float(r["minutes"]) for r in rows] == sorted(float(r["minutes"]) for r in rows)
    assert main(["leaderboard", str(tiny_experiment)]) == 0  # by folder, the terminal table
    table = capsys.readouterr().out
    assert "val_iou" in table and "ERROR: " in table and "completed" in table
    best = leaderboard(str(tiny_experiment)).iloc[0]["id"]
    assert table.index(best) < table.index("ERROR: ")

    assert main(["leaderboard", "no-such-experiment", "--storage", storage]) == 2
    assert "no experiment 'no-such-experiment'" in one_line_error(capsys)
    assert main(["leaderboard", str(tiny_experiment), "--sort", "bogus"]) == 2
    assert "cannot sort by 'bogus'" in one_line_error(capsys)


def test_compare_merges_experiments_and_marks_each_best(tiny_experiment, tmp_path, capsys):
    # a second experiment: the same one under another name, moved elsewhere (Ray's stored paths are stale)
    other = tmp_path / "elsewhere" / "results-copy"
    shutil.copytree(tiny_experiment, other)
    merged, best = compare([str(tiny_experiment), str(other)])
    assert len(merged) == 6 and set(merged["experiment"]) == {tiny_experiment.name, "results-copy"}
    assert len(best) == 2 and set(best["experiment"]) == {tiny_experiment.name, "results-copy"}
    assert best.iloc[0]["val_iou"] == pytest.approx(best.iloc[1]["val_iou"])
    assert merged["is_best"].sum() == 2
    copy_rows = merged[merged["experiment"] == "results-copy"]
    assert all(str(other) in c for c in copy_rows["checkpoint"].dropna())  # resolved in the moved folder
    assert load_experiment(str(other)).best_trial().best_checkpoint.is_dir()

    assert main(["compare", str(tiny_experiment), str(other), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["best"]) == 2 and len(doc["trials"]) == 6
    assert main(["compare", str(tiny_experiment), str(other), "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "## Best of each experiment" in md and "## All trials" in md
    assert sum(1 for line in md.splitlines() if line.startswith("| --- |")) == 2
    assert main(["compare", str(tiny_experiment), str(other)]) == 0
    out = capsys.readouterr().out
    assert "best trial of each experiment" in out and "results-copy" in out


def test_an_experiment_that_never_started_has_an_empty_leaderboard(tiny_experiment, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("nuclei_search.json", "space.yaml"):
        shutil.copy(tiny_experiment / name, fresh / name)
    frame = leaderboard(str(fresh))
    assert len(frame) == 0 and {"id", "val_iou", "stop_reason"} <= set(frame.columns)
    assert json.loads(format_leaderboard(frame, "json")) == []
    assert main(["leaderboard", str(fresh)]) == 0
    assert "no trials yet" in capsys.readouterr().out


@pytest.mark.parametrize("text, line", [
    (None, None),
    ("boom", "boom"),
    ("Failure # 1 (occurred at 2026-01-01)\nTraceback (most recent call last):\n  File \"x.py\", line 3, in f\n"
     "    raise TrialDiverged('loss became nan')\nmodels.train.TrialDiverged: training loss became nan at epoch 2\n",
     "TrialDiverged: training loss became nan at epoch 2"),
])
def test_first_error_line(text, line):
    from nuclei_search.results.trials import first_error_line

    assert first_error_line(text) == line
