"""Search-space YAML: validation with clear errors, and translation to each engine."""

from __future__ import annotations

import optuna
import pytest
from ray import tune

from nuclei_search.cli import main
from nuclei_search.errors import ConfigError
from search.space import SearchSpace

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


@pytest.mark.parametrize(
    "text, message",
    [
        ("params: {backbone: {choice: [vgg16]}}", "unknown backbone 'vgg16'"),
        ("params: {colour: {choice: [red]}}", "param 'colour': unknown param"),
        ("fixed: {epochz: 3}\nparams: {dropout: {uniform: [0, 0.1]}}", "unknown fixed key 'epochz'"),
        ("params: {learning_rate: {loguniform: [0.1, 0.001]}}", "low 0.1 > high 0.001"),
        ("params: {loss: {choice: []}}", "choice needs a non-empty list"),
        ("params: {}", "'params' is empty"),
        ("params: {backbone: {choice: [efficientnet]}}", "needs a 'efficientnet_variant' param"),
        ("params: {dropout: {uniform: [0, 0.1], when: {backbone: none}}}", "not an earlier choice param"),
        ("params: {dropout: {uniform: [0, 0.1]}}\nextra: 1", "unknown top-level key"),
        ("params: [1, 2", "not valid YAML"),
        ("!!python/object/apply:os.system ['echo hacked']", "not valid YAML"),
        ("params: {decoder_depth: {int: [3, 9]}}", "decoder_depth"),
    ],
)
def test_bad_spaces_are_rejected_with_a_clear_message(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        SearchSpace.from_text(text)


def test_bad_space_file_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: {backbone: {choice: [vgg16]}}")
    assert main(["run", "--space", str(bad), "--name", "x", "--storage", str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "vgg16" in err and "\n" not in err
    assert not (tmp_path / "exp").exists()


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
