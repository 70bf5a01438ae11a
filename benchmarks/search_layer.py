"""Scale of the search layer: 200 trials that only sleep 1 s.

Side by side in one Ray session (same trainable, same concurrency, same CPUs):

* nuclei-search: `search.runner.run_search` over `search/spaces/quick.yaml` (space
  parsing and resolution, Optuna TPE with its SQLite study and the orphan check, ASHA,
  the experiment folder and metadata, checkpoint config), then the leaderboard read
  back from disk (`results.leaderboard.leaderboard`);
* bare Ray Tune: `Tuner` over a one-parameter space with Ray's default searcher.

The trainable sleeps 1 s and reports a made-up `val_iou` once. The figure is the extra
wall time of nuclei-search relative to bare Ray Tune.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, result, timer

NAME = "search_layer"
MEASURE = "search layer: 200 sleep-1 s trials through nuclei-search vs bare Ray Tune, same concurrency"
TARGET = "nuclei-search adds <= 5 % wall time"

log = logging.getLogger(__name__)
SLEEP_S = 1.0


def sleep_trial(config: dict, space_source: str | None = None, space_text: str | None = None,
                milestones: tuple[int, ...] = ()) -> None:
    from ray import tune

    from nuclei_search.contract import RANK_METRIC

    time.sleep(SLEEP_S)
    score = 1.0 - abs(float(config.get("learning_rate", config.get("x", 0.5))) - 0.002) * 100
    tune.report({"val_iou": score, RANK_METRIC: score, "epoch": 1})


def run(quick: bool = False, trials: int = 200, concurrency: int = 2) -> dict:
    import ray
    import ray.cloudpickle
    from ray import tune

    from nuclei_search.cluster.runtime import connect
    from nuclei_search.results.leaderboard import leaderboard
    from nuclei_search.search.experiment import SearchOptions
    from nuclei_search.search.runner import run_search

    trials = 6 if quick else trials
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import benchmarks
    connect(None, num_cpus=concurrency)
    with tempfile.TemporaryDirectory(prefix="bench-search-layer-") as tmp:
        bare_tuner = tune.Tuner(
            tune.with_resources(sleep_trial, {"cpu": 1}),
            param_space={"x": tune.loguniform(1e-3, 5e-3)},
            tune_config=tune.TuneConfig(metric="val_iou", mode="max", num_samples=trials,
                                        max_concurrent_trials=concurrency),
            run_config=tune.RunConfig(name="bare", storage_path=str(Path(tmp) / "bare"), verbose=0),
        )
        with timer() as t_bare:
            bare = bare_tuner.fit()
        options = SearchOptions(name="layer", space=str(REPO / "search/spaces/quick.yaml"), num_samples=trials,
                                max_concurrent=concurrency, storage=str(Path(tmp) / "ours"))
        with timer() as t_ours:
            summary = run_search(options, progress=False, trainable=sleep_trial)
            board = leaderboard("layer", storage=options.storage)
        errors = sum(r.error is not None for r in bare) + summary.errored
        if errors or len(board) != trials:
            raise AssertionError(f"{errors} errored trials, leaderboard has {len(board)} of {trials}")
    ray.shutdown()
    extra = t_ours() / t_bare() - 1.0
    ideal = trials * SLEEP_S / concurrency
    log.info("bare %.1f s, nuclei-search %.1f s (ideal %.0f s)", t_bare(), t_ours(), ideal)
    return result(
        NAME, MEASURE, TARGET, 100 * extra, "%", extra <= 0.05,
        trials=trials, concurrency=concurrency, sleep_seconds=SLEEP_S, bare_ray_seconds=t_bare(),
        nuclei_search_seconds=t_ours(), ideal_seconds=ideal,
        bare_overhead_vs_ideal=t_bare() / ideal - 1.0, nuclei_search_overhead_vs_ideal=t_ours() / ideal - 1.0,
    )
