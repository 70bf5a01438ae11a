"""Reliability matrix: kill -9 of the search driver at several moments, then `nuclei-search resume`.

The driver dies with SIGKILL (exit -9) before any trial finished, right after one
finished and while two run. `nuclei-search resume` then exits 0 and prints
"trials: 4 (4 finished, 0 errored)": every finished trial is kept and none is trained
again, unfinished ones continue from their last checkpoint, the Optuna study stays
consistent with Ray (no UpdateFinishedTrialError), and the requested trial count is
reached. Real subprocesses, real SIGKILL, the real CLI with the tiny trainable
(tests/tiny_trainable.py: the U-Net's trial harness, no U-Net; `python tests/tiny_trainable.py
run ...`). Its 0.4 s epochs make Ray save its state often, so a kill can cut the state file
while Ray copies it into the experiment folder: resume puts back Ray's whole staging copy
(search/state_recovery.py; the refit kill test below cuts the files on purpose).

A fourth moment is inside one controller step: after Ray deleted a trial's superseded
checkpoint and before it saved the experiment state naming the new one (the window CI hit
once by chance). `resume` repairs the state (search/checkpoint_repair.py) instead of
failing that trial.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nuclei_search.lock import LOCK_FILE
from search_helpers import trial_dirs, trial_results, trial_starts, write_space

pytestmark = pytest.mark.slow

EPOCHS = 3
SAMPLES = 4
TESTS = Path(__file__).resolve().parents[1]
TINY_CLI = [sys.executable, str(TESTS / "tiny_trainable.py")]  # `nuclei-search` with the tiny trainable
WINDOW_EPOCHS = 6


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [*TINY_CLI, *args], stdout=open(log, "ab"), stderr=subprocess.STDOUT,
        env=env, start_new_session=True,
    )


def _progress(experiment: Path) -> tuple[int, int]:
    """(trials with at least one result, trials whose last result is their final epoch)."""
    started = finished = 0
    if not experiment.is_dir():
        return 0, 0
    for trial in trial_dirs(experiment):
        rows = trial_results(trial)
        if rows:
            started += 1
            finished += rows[-1]["training_iteration"] >= EPOCHS
    return started, finished


def _params(trial: Path) -> dict:
    """A trial's params.json; {} while Ray is still writing it (the test polls as the driver runs)."""
    try:
        return json.loads((trial / "params.json").read_text())
    except ValueError:
        return {}


def _kill_when(proc: subprocess.Popen, experiment: Path, condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"search ended before the kill point ({what}), exit {proc.returncode}")
        if condition(*_progress(experiment)):
            os.kill(proc.pid, signal.SIGKILL)  # the driver only, as a crash would
            assert proc.wait() == -signal.SIGKILL
            time.sleep(1.0)
            return
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"kill point '{what}' not reached in {timeout} s")


def test_kill_9_at_three_moments_then_resume_loses_and_reruns_nothing(tmp_path):
    space = write_space(tmp_path, epochs=EPOCHS)
    storage = tmp_path / "exp"
    experiment = storage / "killed"
    log = tmp_path / "driver.log"
    run = ["run", "--space", str(space), "--name", "killed", "--num-samples", str(SAMPLES),
           "--max-concurrent", "2", "--storage", str(storage), "--quiet", "--seed", "1"]
    resume = ["resume", "killed", "--storage", str(storage), "--quiet"]

    # 1. before any trial has finished
    _kill_when(_start(run, log), experiment, lambda started, finished: started >= 1 and finished == 0,
               "first result, nothing finished")
    # 2. right after a trial finished
    before = _progress(experiment)[1]
    _kill_when(_start(resume, log), experiment, lambda started, finished: finished > before,
               "just after a trial finished")
    # 3. while several trials run
    finished_rows = {t.name: rows for t in trial_dirs(experiment)
                     if (rows := trial_results(t)) and rows[-1]["training_iteration"] >= EPOCHS}

    def several_running(started, finished):
        running = [t for t in trial_dirs(experiment)  # read each file once: Ray may rewrite it meanwhile
                   if (rows := trial_results(t)) and rows[-1]["training_iteration"] < EPOCHS]
        return len(running) >= 2

    proc = _start(resume, log)
    try:
        _kill_when(proc, experiment, several_running, "two trials running", timeout=120)
    except AssertionError:
        if proc.poll() is None:
            raise
    # 4. resume to the end
    final = subprocess.run([*TINY_CLI, *resume], capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:] + log.read_text()[-3000:]
    assert f"trials: {SAMPLES} ({SAMPLES} finished, 0 errored)" in final.stdout, final.stdout
    assert "UpdateFinishedTrialError" not in final.stderr + log.read_text()

    trials = trial_dirs(experiment)
    assert len(trials) == SAMPLES, [t.name for t in trials]
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(experiment))
    assert len(analysis.trials) == SAMPLES
    assert all(t.status == "TERMINATED" for t in analysis.trials), [(t, t.status) for t in analysis.trials]
    for trial in trials:
        rows = trial_results(trial)
        assert rows[-1]["trainable"] == "tiny"
        epochs = [r["training_iteration"] for r in rows]
        assert epochs and epochs[-1] >= 1
        # a finished trial was not touched again
        if trial.name in finished_rows:
            assert rows[: len(finished_rows[trial.name])] == finished_rows[trial.name]
            assert epochs.count(EPOCHS) == 1
        # once a trial had its first checkpoint, every restart resumed from a checkpoint
        first_checkpoint = rows[0]["timestamp"]
        late_fresh = [s for s in trial_starts(trial)
                      if s["resumed_from_epoch"] is None and s["time"] > first_checkpoint + 1]
        assert not late_fresh, trial_starts(trial)
        # at most the epoch in flight at each kill was trained again
        assert len(epochs) - len(set(epochs)) <= 3, epochs
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{experiment / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    assert sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states) >= SAMPLES


def test_kill_between_checkpoint_deletion_and_state_save_is_repaired_on_resume(tmp_path):
    """The window CI once hit by chance, now hit on purpose: Ray deletes a trial's previous
    checkpoint (num_to_keep=1) when it registers the next and saves the experiment state at
    the end of that step. The driver is SIGKILLed in between, from a callback Ray calls while
    saving (tests/driver_crash.py), so the saved state names a deleted checkpoint. Without
    the repair Ray fails that trial on resume ("does not exist on storage anymore"); with it,
    the trial continues from its newest surviving checkpoint and nothing is trained twice."""
    from nuclei_search.search.checkpoint_repair import recorded_checkpoints

    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    space = write_space(tmp_path, epochs=WINDOW_EPOCHS)
    storage, marker = tmp_path / "exp", tmp_path / "killed-at"
    experiment = storage / "window"
    driver = f"""
from driver_crash import KillDriverWhenStateNamesDeletedCheckpoint
from nuclei_search.search.experiment import SearchOptions
from nuclei_search.search.runner import run_search
from tiny_trainable import tiny_trainable
run_search(SearchOptions(name="window", space={str(space)!r}, num_samples=2, max_concurrent=2,
                         storage={str(storage)!r}, seed=1, scheduler="none"), progress=False,
           trainable=tiny_trainable, callbacks=[KillDriverWhenStateNamesDeletedCheckpoint({str(experiment)!r}, {str(marker)!r})])
"""
    killed = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-3000:]
    deleted = [Path(p) for p in marker.read_text().splitlines()]
    assert deleted and not any(p.exists() for p in deleted)
    assert set(deleted) <= set(recorded_checkpoints(experiment).values())  # the saved state names them

    final = subprocess.run([*TINY_CLI, "resume", "window", "--storage", str(storage), "--quiet"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert "trials: 2 (2 finished, 0 errored)" in final.stdout, final.stdout[-3000:] + final.stderr[-3000:]
    assert "does not exist on storage anymore" not in final.stdout + final.stderr
    assert "was deleted before Ray saved its state" in final.stderr
    assert list(experiment.glob("experiment_state-*.json.bak"))  # the state as Ray left it is kept
    # the killed driver's lock was taken over (it could not remove it), and removed at the end
    assert "taking over the lock left by pid" in final.stderr and "which is no longer running" in final.stderr
    assert not (experiment / LOCK_FILE).exists()

    for checkpoint in deleted:
        trial = checkpoint.parent
        rows = trial_results(trial)
        assert [r["training_iteration"] for r in rows] == list(range(1, WINDOW_EPOCHS + 1)), rows
        assert [r["epoch"] for r in rows] == list(range(1, WINDOW_EPOCHS + 1))
        # rows Ray had not copied yet are restored from the surviving checkpoint's state
        assert [r["val_iou_best"] for r in rows] == [max(r["val_iou"] for r in rows[: n + 1]) for n in range(WINDOW_EPOCHS)]
        starts = trial_starts(trial)
        assert starts[0]["resumed_from_epoch"] is None
        assert all(s["resumed_from_epoch"] is not None for s in starts[1:]), starts
        # it went on from the checkpoint that survived, newer than the one the state named
        assert starts[-1]["resumed_from_epoch"] > int(checkpoint.name.split("_")[-1]) + 1, starts
    study = optuna.load_study(study_name="window", storage=f"sqlite:///{experiment / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_kill_9_during_the_refit_stage_then_resume_continues_the_refit_trial(tmp_path):
    """The driver dies while a refit trial trains (search.refit). `resume` continues that trial
    from its checkpoint, starts no second refit and no new exploration trial, and the refit
    trial ends with every epoch trained once (at most the one in flight twice).

    The kill also cut Ray's state files in the experiment folder, as a kill while Ray copies
    them does (cut here on purpose, after the kill): resume puts back the whole copies Ray left
    in the killed driver's staging folder and keeps the cut ones beside."""
    refit_epochs = 10
    space = write_space(tmp_path, epochs=3)
    storage = tmp_path / "exp"
    experiment = storage / "refit"
    log = tmp_path / "driver.log"
    run = ["run", "--space", str(space), "--name", "refit", "--num-samples", "2", "--max-concurrent", "2",
           "--storage", str(storage), "--quiet", "--seed", "1", "--refit-top", "1", "--refit-epochs",
           str(refit_epochs)]

    def refit_trials():
        if not experiment.is_dir():
            return []
        return [t for t in trial_dirs(experiment) if "refit_of" in _params(t)]

    def refit_running(started, finished):
        trials = refit_trials()
        return bool(trials) and 1 <= len(trial_results(trials[0])) < refit_epochs

    _kill_when(_start(run, log), experiment, refit_running, "a refit trial is training")
    cut = [max(experiment.glob(pattern)) for pattern in ("experiment_state-*.json", "searcher-state-*.pkl")]
    for path in cut:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    final = subprocess.run([*TINY_CLI, "resume", "refit", "--storage", str(storage), "--quiet"],
                           capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert "trials: 3 (3 finished, 0 errored)" in final.stdout, final.stdout
    for path in cut:
        assert f"{path.name} was cut short by a kill" in final.stderr, final.stderr[-3000:]
        assert path.with_name(path.name + ".cut").is_file()

    (refit,) = refit_trials()
    params = json.loads((refit / "params.json").read_text())
    rows = trial_results(refit)
    epochs = [r["epoch"] for r in rows]
    assert sorted(set(epochs)) == list(range(1, refit_epochs + 1)) and len(epochs) - len(set(epochs)) <= 1, epochs
    starts = trial_starts(refit)
    assert len(starts) == 2 and starts[0]["resumed_from_epoch"] is None
    assert starts[1]["resumed_from_epoch"] >= 1, starts  # continued from its checkpoint
    explored = [t for t in trial_dirs(experiment) if t != refit]
    best = max(explored, key=lambda t: max(r["val_iou_best"] for r in trial_results(t)))
    assert params["refit_of"] == best.name.removeprefix("trial_")
    study = optuna.load_study(study_name="refit", storage=f"sqlite:///{experiment / 'optuna.db'}")
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
