"""Shared test fixtures: the real DSB2018 zip and a tiny synthetic dataset."""

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
