"""Shared test fixtures: the real DSB2018 zip, a tiny synthetic dataset, a local Ray, and the
results tests' tiny real experiment (tests/results_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

DSB2018_ZIP = Path(__file__).resolve().parents[2] / "shared/datasets/dsb2018/stage1_train.zip"


@pytest.fixture(scope="session")
def dsb2018_zip() -> Path:
    """The real Kaggle stage1_train.zip (read-only). Missing → the test fails loudly."""
    assert DSB2018_ZIP.is_file(), f"real dataset missing: {DSB2018_ZIP} (shared/ must sit beside the repo)"
    return DSB2018_ZIP


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory) -> Path:
    """A 12-image synthetic dataset in Kaggle layout (treat as read-only; copy to modify)."""
    from nuclei_search.data_pipeline.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synthetic") / "stage1_train", n_images=12, seed=0)


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory) -> Path:
    """A cache folder shared by the tests of one session (never the user's cache)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def fresh_keras_session():
    """Keras' global state (layer-name counters, the functional API's graph) reset after the test
    (the model tests' `pytestmark`). No garbage collection: with it each reset took ~0.35 s."""
    yield
    import keras

    keras.backend.clear_session(free_memory=False)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for the tests of one module (shut down after them). Worker output
    stays in Ray's log files: printed late, it would land in a later test's captured stderr."""
    import ray

    from nuclei_search.cluster.runtime import connect

    ray.shutdown()
    connect(None, num_cpus=2, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def results_env(tmp_path_factory):
    """Module-wide: the results tests' cache in $NUCLEI_SEARCH_CACHE (inherited by Ray workers)."""
    from results_helpers import cache_dir

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUCLEI_SEARCH_CACHE", str(cache_dir(tmp_path_factory)))
        yield


@pytest.fixture(scope="module")
def tiny_experiment(results_env, tmp_path_factory) -> Path:
    """The session's tiny real search (Ray Tune + Optuna + ASHA; one errored trial), built once."""
    from results_helpers import build_experiment

    return build_experiment(tmp_path_factory)
