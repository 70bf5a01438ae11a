"""The private Ray and Optuna internals the project uses (nuclei_search/internals.py) still exist
and behave as it expects, on the installed releases: a Ray or Optuna upgrade that moves one
fails here, by name, instead of breaking `resume` or the cluster commands silently."""

from __future__ import annotations

import importlib
import inspect

import pytest

from nuclei_search import internals


@pytest.mark.parametrize("module, attribute", [
    ("ray._private.services", "get_ray_address_from_environment"),
    ("ray._private.ray_constants", "ENABLE_RAY_CLUSTERS_ENV_VAR"),
    ("ray._private.ray_constants", "ENABLE_RAY_CLUSTER"),
    ("ray.autoscaler._private.util", "prepare_config"),
    ("ray.autoscaler._private.util", "validate_config"),
    ("ray.train._internal.session", "_TrainingResult"),
    ("ray._common.utils", "get_default_ray_temp_dir"),
    *internals.STATUS_TASK_INTERNALS,
])
def test_private_names_exist(module, attribute):
    assert hasattr(importlib.import_module(module), attribute), f"{module}.{attribute} is gone"


def test_private_loggers_are_ray_modules():
    for name in (internals.RAY_TOKEN_AUTH_LOGGER, internals.RAY_AUTOSCALER_UTIL_LOGGER):
        importlib.import_module(name)  # the filtered logger is named after its module


def test_address_lookup_takes_an_address_and_a_temp_dir():
    params = list(inspect.signature(importlib.import_module("ray._private.services")
                                    .get_ray_address_from_environment).parameters)
    assert params[:2] == ["addr", "temp_dir"], params


def test_checkpoint_records_can_be_replaced(tmp_path):
    """What checkpoint repair does to a restored trial: Ray's checkpoint manager keeps its records
    in `_checkpoint_results`, registers a `_TrainingResult`, and reports it as the latest."""
    from ray.train import CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.tune.experiment.trial import Trial

    for method in ("from_json_state", "restore_run_metadata", "get_json_state", "invalidate_json_state"):
        assert callable(getattr(Trial, method, None)), f"Trial.{method} is gone"
    gone, kept = tmp_path / "checkpoint_000003", tmp_path / "checkpoint_000002"
    kept.mkdir()
    manager = _CheckpointManager(checkpoint_config=CheckpointConfig())
    manager.register_checkpoint(internals.training_result(gone, None, {"epoch": 4}))
    assert [r.checkpoint.path for r in manager._checkpoint_results] == [str(gone)]
    survivor = internals.training_result(kept, None, {"epoch": 3})
    manager._checkpoint_results = [r for r in manager._checkpoint_results if (tmp_path / r.checkpoint.path).is_dir()]
    manager.register_checkpoint(survivor)
    assert manager.latest_checkpoint_result is survivor and survivor.metrics == {"epoch": 3}


def test_optuna_search_exposes_its_study_and_trial_map():
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space={"x": tune.uniform(0.0, 1.0)}, metric="score", mode="max", seed=0)
    assert searcher.suggest("t1") is not None
    assert not internals.finished_in_study(searcher, "t1") and "t1" not in internals.completed_trials(searcher)
    searcher.on_trial_complete("t1", {"score": 0.5, "x": 0.1})
    assert internals.finished_in_study(searcher, "t1") and "t1" in internals.completed_trials(searcher)
    assert not internals.finished_in_study(searcher, "never-suggested")
