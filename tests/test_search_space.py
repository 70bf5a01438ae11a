"""Search-space YAML: loading and translation to each engine.

Bad and hostile spaces (one-line ConfigError, exit 2) are a row of the reliability matrix:
tests/reliability/test_hostile_space.py.
"""

from __future__ import annotations

import optuna
import pytest
from ray import tune

from nuclei_search.config import TrialConfig
from nuclei_search.errors import ConfigError
from nuclei_search.search.space import SearchSpace

CONDITIONAL = """
fixed: {image_size: 64, epochs: 2}
params:
  backbone: {choice: [none, mobilenetv2, efficientnet]}
  efficientnet_variant: {choice: [b0, b1, b2, b3], when: {backbone: efficientnet}}
  decoder_depth: {int: [3, 5]}
  learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
  dropout: {uniform: [0.0, 0.3]}
"""


@pytest.mark.parametrize("path", ["search/spaces/quick.yaml", "search/spaces/default.yaml"])
def test_shipped_spaces_load(path):
    space = SearchSpace.from_yaml(path)
    assert space.params and all(space.resolve(s) for s in space.corner_samples())


def test_conditional_space_with_multivariate_grouped_tpe():
    space = SearchSpace.from_text(CONDITIONAL)
    sampler = optuna.samplers.TPESampler(seed=1, multivariate=True, group=True, n_startup_trials=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    seen = set()
    for _ in range(12):
        trial = study.ask()
        fixed = space.define_by_run(trial)
        assert fixed == {"image_size": 64, "epochs": 2}
        config = space.resolve(trial.params)
        seen.add(config.backbone)
        # the variant exists exactly when the backbone is EfficientNet
        assert ("efficientnet_variant" in trial.params) == config.backbone.startswith("efficientnet")
        if config.backbone.startswith("efficientnet"):
            assert config.backbone == "efficientnet" + trial.params["efficientnet_variant"]
        study.tell(trial, config.learning_rate)
    assert any(b.startswith("efficientnet") for b in seen) and "none" in seen


def test_tune_param_space_random_and_grid():
    space = SearchSpace.from_text(CONDITIONAL)
    random_space = space.tune_param_space("random")
    assert random_space["image_size"] == 64
    assert isinstance(random_space["learning_rate"], tune.search.sample.Float)
    assert isinstance(random_space["decoder_depth"], tune.search.sample.Integer)
    with pytest.raises(ConfigError, match="grid search needs choice or int"):
        space.tune_param_space("grid")
    grid = SearchSpace.from_text("params: {backbone: {choice: [none, mobilenetv2]}, decoder_depth: {int: [3, 4]}}")
    assert grid.tune_param_space("grid")["decoder_depth"] == {"grid_search": [3, 4]}
    assert grid.size == 4


def test_resolve_ignores_inactive_conditional_values():
    space = SearchSpace.from_text(CONDITIONAL)
    config = space.resolve({"backbone": "none", "efficientnet_variant": "b3", "decoder_depth": 4,
                            "learning_rate": 1e-3, "dropout": 0.1})
    assert config.backbone == "none" and config.decoder_depth == 4


def test_keras_tuner_declares_the_same_space():
    import keras_tuner as kt

    space = SearchSpace.from_text(CONDITIONAL)
    hp = kt.HyperParameters()
    values = space.keras_tuner_values(hp)
    assert set(hp.values) >= {"backbone", "decoder_depth", "learning_rate", "dropout"}
    config = space.resolve(values)
    assert 1e-4 <= config.learning_rate <= 1e-2


def test_with_fixed_overrides_and_round_trips():
    space = SearchSpace.from_text(CONDITIONAL).with_fixed(data="synthetic:12", epochs=3)
    again = SearchSpace.from_text(space.to_yaml())
    assert again.fixed["data"] == "synthetic:12" and again.fixed["epochs"] == 3
    assert [p.name for p in again.params] == [p.name for p in space.params]


@pytest.mark.parametrize("grace, epochs", [(4, 16), (4, 20), (1, 8), (3, 16), (2, 2)])
def test_every_trial_validates_at_the_rungs_ray_builds_for_asha(grace, epochs):
    from nuclei_search.search.experiment import SearchOptions
    from nuclei_search.search.runner import build_scheduler, scheduler_milestones

    options = SearchOptions(name="x", space="s.yaml", grace_period=grace)
    scheduler = build_scheduler(options, epochs)
    rays = sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs)  # Ray's own rungs (private)
    assert list(scheduler_milestones(options, epochs)) == rays
    assert scheduler_milestones(SearchOptions(name="x", space="s.yaml", scheduler="median"), epochs) == ()


def test_refits_are_sized_with_their_own_validation_epochs():
    """A refit that validates less often than its exploration trial gets the epochs that time frees:
    training and validation seconds are measured apart and the refit's own plan is counted."""
    from ray.tune.search import Searcher

    from nuclei_search.models.train import validation_epochs
    from nuclei_search.search.refit import RefitStage

    def stage(tail):
        refit = RefitStage(Searcher(metric="val_iou_best", mode="max"), explore=1, top_k=1, epochs=500, validation=(2, tail))
        refit.plan = ["a"]
        for epoch in (2, 4, 6, 8, 10):  # 10 epochs of 6 s, a 10 s validation every 2
            refit.on_trial_result("a", {"time_total_s": epoch * 6.0 + epoch // 2 * 10.0, "epoch": epoch,
                                        "validation_seconds": 10.0, "val_iou_best": 0.5})
        return refit

    def seconds(epochs, tail):
        plan = validation_epochs(TrialConfig(epochs=epochs, validation_freq=2, validation_tail=tail))
        return epochs * 6.0 + len(plan) * 10.0

    lengths = {}
    for tail in (1.0, 0.25):
        lengths[tail] = stage(tail).refit_length("a", minutes=10.0)
        assert seconds(lengths[tail], tail) <= 600 < seconds(lengths[tail] + 1, tail)
    assert lengths[1.0] == 54  # 54 epochs · 6 s + 27 validations · 10 s = 594 s
    assert lengths[0.25] > 1.2 * lengths[1.0]
    # a trainable that does not time its validation apart: seconds per epoch, all in
    legacy = RefitStage(Searcher(metric="val_iou_best", mode="max"), explore=1, top_k=1, epochs=500, validation=(2, 0.25))
    legacy.plan = ["a"]
    legacy.on_trial_result("a", {"time_total_s": 110.0, "epoch": 10, "val_iou_best": 0.5})
    assert legacy.refit_length("a", minutes=10.0) == 54
