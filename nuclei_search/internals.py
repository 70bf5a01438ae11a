"""Every private Ray and Optuna internal the project relies on, in one place.

Public APIs do not cover five things the project needs: resuming a search whose newest
checkpoint was deleted by a kill (checkpoint repair rewrites Ray Tune's saved trial
state), finding Ray's driver staging copy of a state file a kill cut short, telling Ray's
OptunaSearch that a trial already finished in the study, keeping a private Ray on
loopback, and validating a cluster-launcher YAML offline. Each access is a
function here; nothing else in the package touches these names (the cluster-status task
reads `ray._private.state` inside a function shipped to the cluster, listed in
`STATUS_TASK_INTERNALS`).

pyproject.toml bounds `ray` and `optuna` to the tested releases, and
tests/test_internals.py checks every internal below against the installed versions: when
a release moves or renames one, that test fails and names it, instead of `resume`
breaking silently.
"""

from __future__ import annotations

import os
from pathlib import Path

from nuclei_search.compat import old_module_names

#: Loggers whose records the project filters (their modules are private).
RAY_TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
RAY_AUTOSCALER_UTIL_LOGGER = "ray.autoscaler._private.util"
#: (module, attribute) read by `cluster.status`'s remote task, which must not import this package.
STATUS_TASK_INTERNALS = (("ray._private.state", "available_resources_per_node"), ("ray._private.state", "actors"))


# --------------------------------------------------------------------------- Ray core
def ray_address_from_environment() -> str:
    """What `ray.init(address="auto")` joins: Ray's own lookup (/tmp/ray/ray_current_cluster,
    then running GCS processes); ConnectionError when there is none."""
    from ray._private.services import get_ray_address_from_environment

    return get_ray_address_from_environment("auto", None)


def keep_ray_on_loopback() -> None:
    """Make a Ray started by this process talk over 127.0.0.1, not the machine's outward address.

    On Linux Ray picks the address it would use to reach other machines as its node address.
    Its switch RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes it use loopback; the variable is read
    when ray is imported, so the constant is set too, and the variable is inherited by the
    raylet and every worker."""
    import ray._private.ray_constants as ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def ray_driver_staging_folders(experiment_name: str) -> list[Path]:
    """Ray Tune's driver staging folders of an experiment, of every Ray session on this machine
    (`<ray temp>/session_*/artifacts/<start time>/<name>/driver_artifacts`): the driver writes
    its state files there before Ray copies them into the experiment folder."""
    import glob

    from ray._common.utils import get_default_ray_temp_dir

    root = Path(get_default_ray_temp_dir())
    return sorted(root.glob(f"session_*/artifacts/*/{glob.escape(experiment_name)}/driver_artifacts"))


def prepare_launcher_config(raw: dict) -> dict:
    """The cluster launcher's own defaults and checks for a cluster YAML, offline."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(raw)
    validate_config(prepared)
    return prepared


# --------------------------------------------------------------------------- Ray Tune's saved state
def saved_trials(state: dict):
    """(position, Trial with its run metadata, latest recorded checkpoint result) per trial of a
    saved experiment state (`experiment_state-*.json` read as a dict)."""
    import json

    from ray.tune.experiment.trial import Trial

    for position, (trial_json, metadata_json) in enumerate(state.get("trial_data", [])):
        with old_module_names():  # a state written before the packages moved under nuclei_search
            trial = Trial.from_json_state(trial_json, stub=True)  # no trainable registered in this process
            trial.restore_run_metadata(metadata_json)
        trial.stub = bool(json.loads(trial_json).get("stub", False))  # written back as it was
        manager = trial.run_metadata.checkpoint_manager
        latest = manager.latest_checkpoint_result if manager is not None else None
        if latest is not None and latest.checkpoint is not None:
            yield position, trial, latest


def saved_trial_state(trial) -> list:
    """A Trial as the saved experiment state's `trial_data` holds it."""
    return list(trial.get_json_state())


def training_result(checkpoint_path: str | Path, filesystem, metrics: dict):
    """A checkpoint record as Ray Tune's checkpoint manager keeps it."""
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult

    return _TrainingResult(checkpoint=Checkpoint(str(checkpoint_path), filesystem=filesystem), metrics=metrics)


def replace_latest_checkpoint(trial, record, index: int) -> None:
    """In a restored Trial: forget checkpoint records whose folders are gone, register `record`
    as the latest, and make the next checkpoint index `index + 1`."""
    manager = trial.run_metadata.checkpoint_manager
    manager._checkpoint_results = [r for r in manager._checkpoint_results if Path(r.checkpoint.path).is_dir()]
    manager.register_checkpoint(record)
    trial.run_metadata.last_result = {**trial.run_metadata.last_result, **record.metrics}
    trial.storage.current_checkpoint_index = index
    trial.invalidate_json_state()


# --------------------------------------------------------------------------- Ray's OptunaSearch
def finished_in_study(searcher, trial_id: str) -> bool:
    """Whether the Optuna trial behind a Ray trial is finished in the study (OptunaSearch keeps
    the map from Ray trial ids to Optuna trials private)."""
    ot_trial = searcher._ot_trials.get(trial_id)
    if ot_trial is None or searcher._ot_study is None:
        return False
    return searcher._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()


def completed_trials(searcher) -> set[str]:
    """The Ray trial ids OptunaSearch has already told the study about."""
    return searcher._completed_trials
