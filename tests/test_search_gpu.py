"""GPU placement with Ray's logical GPUs: four 0.5-GPU trials run four-wide on two GPUs.

The trials are the tiny trainable's (tests/tiny_trainable.py): what is tested is where Ray
puts them and what each one is given, recorded by the harness every trial runs in."""

from __future__ import annotations

import pytest
import ray

from nuclei_search.cluster.runtime import connect
from nuclei_search.search.experiment import SearchOptions
from nuclei_search.search.runner import run_search
from search_helpers import trial_dirs, trial_results, trial_starts, write_space
from tiny_trainable import tiny_trainable

pytestmark = pytest.mark.slow  # trains, searches or starts Ray (README: the fast lane skips it)


@pytest.fixture
def gpu_ray():
    ray.shutdown()
    connect(None, num_cpus=2, num_gpus=2)
    yield
    ray.shutdown()


def test_four_half_gpu_trials_run_at_once_each_on_its_gpu(gpu_ray, tmp_path):
    space = write_space(tmp_path, epochs=8)
    options = SearchOptions(name="gpu", space=str(space), num_samples=4, max_concurrent=4,
                            cpus_per_trial=0.5, gpus_per_trial=0.5, scheduler="none",
                            storage=str(tmp_path / "exp"))
    summary = run_search(options, progress=False, trainable=tiny_trainable)
    assert summary.trials == 4 and summary.errored == 0
    devices, spans = [], []
    for trial in trial_dirs(summary.experiment):
        start = trial_starts(trial)[0]
        assert start["gpu_ids"] and len(start["gpu_ids"]) == 1
        # the trial sees exactly the GPU Ray gave it
        assert start["cuda_visible_devices"] == start["gpu_ids"][0]
        devices.append(start["cuda_visible_devices"])
        results = trial_results(trial)
        assert len(results) == 8 and results[0]["trainable"] == "tiny"
        spans.append((start["time"], results[-1]["timestamp"]))
    assert sorted(devices) == ["0", "0", "1", "1"]
    # four-wide: every trial had started before any trial reported its last epoch
    assert max(s for s, _ in spans) < min(e for _, e in spans)
