"""A search that builds on what is known: `start_from` points, a refit stage, warm start from
earlier experiments, and an ensemble export with postprocessing chosen on validation.

One real tiny search (Ray Tune + Optuna + ASHA, 12 synthetic images, 32 px) serves the
module: two `start_from` points (decoder depths 4 and 3) then one sampled trial, and a
refit stage that trains the top two configurations again for 3 epochs instead of 2
(validated in the last half of each schedule and at ASHA's rungs).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import optuna
import pytest

from nuclei_search.cli import main
from nuclei_search.errors import ConfigError
from nuclei_search.search.experiment import SearchOptions
from nuclei_search.search.runner import run_search
from nuclei_search.search.space import SearchSpace
from search_helpers import assert_one_line_error, run_cli, snapshot, trial_dirs, trial_results, write_space

pytestmark = pytest.mark.slow

SPACE = """
fixed:
  data: synthetic:12
  image_size: 32
  epochs: 2
  validation_tail: 0.5
  batch_size: 4
  crops_per_image: 1
  base_filters: 4
  backbone: none
  batch_norm: false
  augment: flip
  instance_method: cc
params:
  decoder_depth: {int: [3, 4]}
  learning_rate: {choice: [1.0e-6, 3.0e-3, 1.0e-2]}
  loss: {choice: [bce, bce_dice]}
start_from:
  - {decoder_depth: 4, learning_rate: 3.0e-3, loss: bce}
  - {decoder_depth: 3, learning_rate: 1.0e-2}
"""
EXPLORE, REFIT, REFIT_EPOCHS = 3, 2, 3


@pytest.fixture(scope="module")
def searched(local_ray, tmp_path_factory):
    root = tmp_path_factory.mktemp("build-on")
    (root / "space.yaml").write_text(SPACE)
    options = SearchOptions(name="known", space=str(root / "space.yaml"), num_samples=EXPLORE, max_concurrent=2,
                            storage=str(root / "exp"), seed=1, refit_top=REFIT, refit_epochs=REFIT_EPOCHS)
    summary = run_search(options, progress=False)
    assert summary.trials == EXPLORE + REFIT and summary.errored == 0
    return root, summary.experiment


# --------------------------------------------------------------------------- start_from
def test_start_from_entries_are_validated_against_the_space(tmp_path):
    base = SPACE.split("start_from:")[0]
    good = SearchSpace.from_text(SPACE)
    assert good.start_from == ({"decoder_depth": 4, "learning_rate": 3.0e-3, "loss": "bce"},
                               {"decoder_depth": 3, "learning_rate": 1.0e-2})
    assert SearchSpace.from_text(good.to_yaml()).start_from == good.start_from  # saved with the experiment
    # a param that becomes fixed (--max-epochs, --data ...) leaves the entries
    assert good.with_fixed(decoder_depth=3).start_from[0] == {"learning_rate": 3.0e-3, "loss": "bce"}
    bad = {
        "- {learning_rate: 5.0e-3}": "outside the space",
        "- {decoder_depth: 6}": "outside the space",
        "- {decoder_depth: 3.5}": "outside the space",
        "- {epochs: 3}": "is fixed in this space",
        "- {optimizer: sgd}": "is not a searched param",
        "- {}": "non-empty mapping",
        "{decoder_depth: 3}": "must be a list",
    }
    for entry, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            SearchSpace.from_text(base + "start_from:\n  " + entry + "\n")


def test_start_from_points_are_evaluated_first(searched):
    _, experiment = searched
    study = optuna.load_study(study_name="known", storage=f"sqlite:///{experiment / 'optuna.db'}")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == EXPLORE  # refit trials are not Optuna's samples
    assert trials[0].params == {"decoder_depth": 4, "learning_rate": 3.0e-3, "loss": "bce"}
    assert {k: trials[1].params[k] for k in ("decoder_depth", "learning_rate")} == {
        "decoder_depth": 3, "learning_rate": 1.0e-2}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


# --------------------------------------------------------------------------- refit
def test_refit_trains_the_top_configurations_again_as_trials_of_the_experiment(searched, capsys):
    from nuclei_search.results.leaderboard import experiment_frame
    from nuclei_search.results.trials import load_experiment

    _, path = searched
    experiment = load_experiment(path)
    explored = [t for t in experiment.trials if not t.refit_of]
    refits = [t for t in experiment.trials if t.refit_of]
    assert len(explored) == EXPLORE and len(refits) == REFIT
    # the top two explored trials by their best val_iou, each trained again from scratch for longer
    best_of = {t.trial_id: max(r["val_iou_best"] for r in trial_results(t.folder)) for t in explored}
    top = sorted(best_of, key=lambda i: -best_of[i])[:REFIT]
    assert sorted(t.refit_of for t in refits) == sorted(top)
    for refit in refits:
        source = experiment.trial(refit.refit_of)
        assert refit.params == source.params
        assert refit.config == {**source.config, "epochs": REFIT_EPOCHS}
        assert refit.epochs_run == REFIT_EPOCHS and refit.stop_reason == "completed"  # ASHA left it alone
        # validation_tail 0.5 of 3 epochs: the refit (not scheduled) validates and reports its last epoch only
        assert [r["epoch"] for r in trial_results(refit.folder)] == [REFIT_EPOCHS]
        assert refit.best_checkpoint is not None
        assert refit.started >= max(t.ended for t in explored) - 1  # after every exploration trial ended
    # ASHA's rungs (grace 1: epochs 1 and 2) are always validated, until ASHA stops a trial
    reported = [[r["epoch"] for r in trial_results(t.folder)] for t in explored]
    assert all(epochs == [1, 2][: len(epochs)] for epochs in reported) and [1, 2] in reported
    frame = experiment_frame(experiment)
    stages = dict(zip(frame["id"], frame["stage"]))
    assert {stages[t.trial_id] for t in refits} == {f"refit of {t.refit_of}" for t in refits}
    assert {stages[t.trial_id] for t in explored} == {"explore"}


def test_refit_options_are_checked(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    for extra, message in ((["--refit-top", "2", "--searcher", "random"], "--refit-top needs"),
                           (["--refit-top", "1", "--scheduler", "hyperband"], "Hyperband"),
                           (["--refit-epochs", "4"], "--refit-epochs needs --refit-top"),
                           (["--refit-minutes", "5"], "--refit-minutes needs --refit-top"),
                           (["--refit-top", "1", "--refit-minutes", "0"], "--refit-minutes must be > 0"),
                           (["--time-budget", "30"], "--time-budget needs --refit-top"),
                           (["--refit-top", "1", "--time-budget", "-1"], "--time-budget must be > 0")):
        code, _, err = run_cli(capsys, "run", "--space", space, "--storage", tmp_path / "exp", "--name", "x",
                               "--quiet", *extra)
        assert_one_line_error(code, err, message)
    assert not (tmp_path / "exp").exists()


def test_refit_minutes_sizes_each_refit_to_fit_at_its_measured_speed(local_ray, tmp_path):
    """With --refit-minutes each refit trial gets the epochs that fit in its share of the stage's
    wall time at the seconds per epoch its exploration trial measured (the tiny trainable: the
    orchestration is the point), and it trains them within that time."""
    from tiny_trainable import tiny_trainable

    space = write_space(tmp_path, epochs=3)
    minutes, cap = 0.1, 60
    options = SearchOptions(name="sized", space=str(space), num_samples=2, max_concurrent=2, storage=str(tmp_path),
                            seed=1, scheduler="none", refit_top=2, refit_epochs=cap, refit_minutes=minutes)
    summary = run_search(options, progress=False, trainable=tiny_trainable)
    assert summary.trials == 4 and summary.errored == 0
    trials = {t.name.removeprefix("trial_"): t for t in trial_dirs(summary.experiment)}
    refits = {t: json.loads((d / "params.json").read_text()) for t, d in trials.items()
              if "refit_of" in json.loads((d / "params.json").read_text())}
    assert len(refits) == 2
    for trial, params in refits.items():
        explored = trial_results(trials[params["refit_of"]])[-1]
        seconds_per_epoch = explored["time_total_s"] / explored["epoch"]
        assert params["refit_epochs"] == min(cap, int(minutes * 60 / seconds_per_epoch)) > 3
        rows = trial_results(trials[trial])
        assert [r["epoch"] for r in rows] == list(range(1, params["refit_epochs"] + 1))
        assert rows[-1]["time_total_s"] <= minutes * 60 * 1.25  # about the time it was given


def test_time_budget_gives_the_refit_stage_what_exploration_left(local_ray, tmp_path, caplog):
    """--time-budget: the refits are sized to the minutes exploration left of the budget, so the
    whole search ends within it (the tiny trainable: 0.4 s epochs)."""
    from tiny_trainable import tiny_trainable

    space = write_space(tmp_path, epochs=3)
    budget = 0.4  # minutes
    options = SearchOptions(name="budget", space=str(space), num_samples=2, max_concurrent=2, storage=str(tmp_path),
                            seed=1, scheduler="none", refit_top=1, refit_epochs=200, time_budget=budget)
    with caplog.at_level(logging.INFO, logger="nuclei_search.search.refit"):
        summary = run_search(options, progress=False, trainable=tiny_trainable)
    assert summary.trials == 3 and summary.errored == 0
    (line,) = [r.getMessage() for r in caplog.records if "minutes left after" in r.getMessage()]
    left = float(line.split("refit stage: ")[1].split(" of")[0])
    explored = budget - left
    assert 0 < explored < budget, line
    (refit,) = [d for d in trial_dirs(summary.experiment) if "refit_of" in json.loads((d / "params.json").read_text())]
    epochs = json.loads((refit / "params.json").read_text())["refit_epochs"]
    assert 3 < epochs < 200
    assert trial_results(refit)[-1]["time_total_s"] <= left * 60 * 1.25
    assert summary.wall_seconds <= budget * 60 * 1.25  # search + refit within the budget


# --------------------------------------------------------------------------- warm start
def test_warm_start_adds_the_earlier_trials_that_fit_the_new_space(searched, tmp_path, caplog):
    root, experiment = searched
    # the new space drops the 1e-6 learning rate and searches dropout, which the old one held fixed at 0
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.split("start_from:")[0].replace("[1.0e-6, 3.0e-3, 1.0e-2]", "[3.0e-3, 1.0e-2]")
                     + "  dropout: {uniform: [0.0, 0.2]}\n")
    old = optuna.load_study(study_name="known", storage=f"sqlite:///{experiment / 'optuna.db'}")
    fitting = [t for t in old.trials if t.params["learning_rate"] != 1.0e-6]
    options = SearchOptions(name="warm", space=str(space), num_samples=1, max_concurrent=1,
                            storage=str(root / "exp"), seed=2, warm_start=["known"], max_epochs=1)
    with caplog.at_level(logging.INFO, logger="nuclei_search.search.warm_start"):
        summary = run_search(options, progress=False)
    assert summary.trials == 1 and summary.errored == 0
    study = optuna.load_study(study_name="warm", storage=f"sqlite:///{summary.experiment / 'optuna.db'}")
    added = [t for t in study.trials if "warm_start_from" in t.user_attrs]
    assert len(added) == len(fitting) and len(study.trials) == len(fitting) + 1
    for t in added:
        source = old.trials[int(t.user_attrs["warm_start_from"].split("#")[1])]
        assert t.value == source.value
        assert t.params == {**source.params, "dropout": 0.0}
    skipped = [r.message for r in caplog.records if "skipping trial" in r.message]
    assert len(skipped) == EXPLORE - len(fitting)
    assert all("learning_rate=1e-06 is outside the new space" in m for m in skipped)
    recorded = json.loads((summary.experiment / "nuclei_search.json").read_text())
    assert recorded["warm_start"] == ["known"] and recorded["data_fingerprint"]


def test_warm_start_from_other_data_is_refused_and_creates_nothing(searched, tmp_path, capsys):
    root, _ = searched
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    before = snapshot(root / "exp")
    code, _, err = run_cli(capsys, "run", "--space", space, "--storage", root / "exp", "--name", "other-data",
                           "--data", "synthetic:10", "--warm-start", "known", "--quiet")
    assert_one_line_error(code, err, "--warm-start known", "other data")
    assert snapshot(root / "exp") == before


# --------------------------------------------------------------------------- ensemble export
@pytest.fixture(scope="module")
def ensemble(searched, tmp_path_factory):
    _, experiment = searched
    out = tmp_path_factory.mktemp("ensemble") / "model"
    assert main(["export", str(experiment), "--out", str(out), "--ensemble", str(EXPLORE + REFIT)]) == 0
    return out, json.loads((out / "model_card.json").read_text())


def test_ensemble_of_members_of_different_depths_round_trips(ensemble):
    import keras
    import tensorflow as tf

    import nuclei_search.models.layers  # noqa: F401  (registers the package's layers)

    out, card = ensemble
    members = card["ensemble"]["members"]
    assert len(members) == EXPLORE + REFIT and {m["stride"] for m in members} == {8, 16}
    assert card["input"]["stride_multiple"] == 1  # each member pads to its own stride inside
    model = keras.models.load_model(out / "model.keras", safe_mode=True, compile=False)
    assert not any(type(layer).__name__ == "Lambda" for layer in model.layers)
    served = tf.saved_model.load(str(out / "saved_model"))
    image = np.random.default_rng(0).random((1, 37, 50, 3), dtype=np.float32)  # no stride divides 37 or 50
    a = np.asarray(model.predict_on_batch(image))
    b = served.serve(tf.constant(image)).numpy()
    assert a.shape == (1, 37, 50, 1)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert card["verification"]["ok"] and card["verification"]["max_prob_diff"] < 1e-5


def test_ensemble_card_scores_are_reproduced_by_evaluate_and_shown_beside_the_best_trial(ensemble, searched,
                                                                                         capsys):
    from nuclei_search.results.leaderboard import ensemble_frame
    from nuclei_search.results.trials import load_experiment

    out, card = ensemble
    post = card["postprocess"]
    assert post["chosen_on"].startswith("validation") and 0 < post["threshold"] < 1
    assert post["metrics"]["val_map"] == pytest.approx(post["val_map"])
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", "synthetic:12", "--split", "val", "--format", "json",
                 "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threshold"] == post["threshold"] and result["postprocess"]["min_size"] == post["min_size"]
    assert result["pooled"]["iou"] == pytest.approx(post["metrics"]["val_iou"], abs=1e-3)
    assert result["mean"]["map"] == pytest.approx(post["metrics"]["val_map"], abs=1e-3)
    # a flag overrides the card's choice
    assert main(["evaluate", str(out), "--data", "synthetic:12", "--split", "val", "--format", "json",
                 "--quiet", "--threshold", "0.5", "--min-size", "0", "--no-tta"]) == 0
    overridden = json.loads(capsys.readouterr().out)
    assert overridden["threshold"] == 0.5 and overridden["postprocess"]["min_size"] == 0
    assert overridden["postprocess"]["tta"] is False and result["postprocess"]["tta"] is post["tta"]
    assert set(post["tta_compared"]) == {"plain", "tta"}  # TTA was tried on validation
    assert overridden["pooled"]["iou"] == pytest.approx(card["metrics"]["val_iou"], abs=1e-3)

    frame = ensemble_frame(load_experiment(searched[1]))
    tta = " + tta" if post["tta"] else ""
    assert list(frame["model"]) == ["ensemble", "ensemble + postprocessing" + tta, "best single trial"]
    assert frame["val_iou"].iloc[0] == pytest.approx(card["metrics"]["val_iou"])
    assert frame["members"].iloc[2] == card["ensemble"]["best_single"]["trial_id"]


def test_bad_ensemble_requests_are_one_line_errors(searched, tmp_path, capsys):
    _, experiment = searched
    for extra, message in ((["--ensemble", "0"], "positive number of members or 'auto'"),
                           (["--ensemble", "best"], "positive number of members or 'auto'"),
                           (["--ensemble", "9"], "has only 5 trial(s)"),
                           (["--ensemble", "auto", "--ensemble-pool", "0"], "--ensemble-pool must be >= 1"),
                           (["--ensemble", "2", "--trial", "x"], "excludes --trial")):
        code, _, err = run_cli(capsys, "export", experiment, "--out", tmp_path / "e", *extra)
        assert_one_line_error(code, err, message)
    assert not (tmp_path / "e").exists()
